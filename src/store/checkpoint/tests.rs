use super::*;
use crate::config::{Config, Sources};

fn arch() -> Architecture {
    let c = Config::load(&Sources { preset: "quick".into(), ..Default::default() }).unwrap();
    Architecture::new(&c.model, c.data.dims, c.data.length)
}

fn ckpt(arch: &Architecture, epoch: usize) -> Checkpoint {
    let n = arch.numel() as usize;
    Checkpoint {
        header: Header { member: 3, seed: 42, attempt: 0, epoch, step: 10 * epoch as i64, config_hash: "abc".into(), score_offset: 10.0, history: vec![] },
        weights: (0..n).map(|i| i as f32 * 0.01 + epoch as f32).collect(),
        adam_m: vec![0.5; n],
        adam_v: vec![0.25; n],
    }
}

#[test]
fn save_then_load_round_trips_and_prunes() {
    let dir = tempfile::tempdir().unwrap();
    let a = arch();
    for epoch in 1..=4 {
        save(dir.path(), &a, &ckpt(&a, epoch)).unwrap();
    }
    let files = list(dir.path()).unwrap();
    assert_eq!(files.len(), KEEP);
    let (latest, damaged) = load_latest(dir.path(), &a, "abc", 3).unwrap();
    assert!(damaged.is_empty());
    assert_eq!(latest.unwrap(), ckpt(&a, 4));
}

/// Garbage named as a later epoch is never loaded, and never makes a new checkpoint look old.
#[test]
fn a_later_file_does_not_prune_new_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let a = arch();
    for epoch in [98, 99] {
        std::fs::write(path_for(dir.path(), epoch), b"not a checkpoint").unwrap();
    }
    for epoch in 1..=3 {
        save(dir.path(), &a, &ckpt(&a, epoch)).unwrap();
    }
    let (latest, damaged) = load_latest(dir.path(), &a, "abc", 3).unwrap();
    assert_eq!(latest.unwrap(), ckpt(&a, 3));
    assert_eq!(damaged.len(), 2);
    assert_eq!(list(dir.path()).unwrap().len(), 2 + KEEP);
}

#[test]
fn epochs_past_five_digits_are_newer() {
    let dir = tempfile::tempdir().unwrap();
    let a = arch();
    for epoch in [99_998, 99_999, 100_000, 100_001] {
        save(dir.path(), &a, &ckpt(&a, epoch)).unwrap();
    }
    assert_eq!(load_latest(dir.path(), &a, "abc", 3).unwrap().0.unwrap().header.epoch, 100_001);
    assert_eq!(list(dir.path()).unwrap(), [path_for(dir.path(), 100_001), path_for(dir.path(), 100_000)]);
}

/// Saved in eight directories (eight metadata HashMaps, each with its own key order), one
/// checkpoint gives eight identical files.
#[test]
fn equal_checkpoints_are_equal_files() {
    let a = arch();
    let dirs: Vec<_> = (0..8).map(|_| tempfile::tempdir().unwrap()).collect();
    let files: Vec<Vec<u8>> = dirs.iter().map(|d| std::fs::read(save(d.path(), &a, &ckpt(&a, 2)).unwrap()).unwrap()).collect();
    assert!(files.iter().all(|f| f == &files[0]));
    let (loaded, damaged) = load_latest(dirs[0].path(), &a, "abc", 3).unwrap();
    assert!(damaged.is_empty() && loaded.unwrap() == ckpt(&a, 2));
}

#[test]
fn a_damaged_newest_checkpoint_falls_back_to_the_previous() {
    let a = arch();
    for damage in ["truncate", "flip", "garbage"] {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &a, &ckpt(&a, 1)).unwrap();
        let newest = save(dir.path(), &a, &ckpt(&a, 2)).unwrap();
        let mut bytes = std::fs::read(&newest).unwrap();
        match damage {
            "truncate" => bytes.truncate(bytes.len() / 2),
            "flip" => *bytes.last_mut().unwrap() ^= 0x10,
            _ => bytes = b"not a checkpoint at all".to_vec(),
        }
        std::fs::write(&newest, bytes).unwrap();
        let (latest, damaged) = load_latest(dir.path(), &a, "abc", 3).unwrap();
        assert_eq!(latest.unwrap().header.epoch, 1, "{damage}");
        assert_eq!(damaged.len(), 1);
        assert!(damaged[0].contains("epoch-00002"), "{damaged:?}");
    }
}

#[test]
fn another_config_or_shape_is_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let a = arch();
    let path = save(dir.path(), &a, &ckpt(&a, 1)).unwrap();
    assert!(load(&path, &a, "other").is_err());
    let c = Config::load(&Sources { preset: "quick".into(), sets: vec!["model.hidden=8".into()], ..Default::default() }).unwrap();
    let other = Architecture::new(&c.model, c.data.dims, c.data.length);
    assert!(load(&path, &other, "abc").unwrap_err().to_string().contains("expected"));
}

#[test]
fn a_checkpoint_with_a_valid_hash_but_not_finite_values_is_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let a = arch();
    save(dir.path(), &a, &ckpt(&a, 1)).unwrap();
    let mut bad = ckpt(&a, 2);
    bad.adam_v[7] = f32::INFINITY;
    save(dir.path(), &a, &bad).unwrap();
    let (latest, damaged) = load_latest(dir.path(), &a, "abc", 3).unwrap();
    assert_eq!(latest.unwrap().header.epoch, 1);
    assert!(damaged[0].contains("not finite"), "{damaged:?}");
}

#[test]
fn temp_files_are_never_taken_for_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".epoch-00009.x.tmp.safetensors"), b"partial").unwrap();
    std::fs::write(dir.path().join("epoch-00009.tmp.safetensors"), b"partial").unwrap();
    let (latest, damaged) = load_latest(dir.path(), &arch(), "abc", 3).unwrap();
    assert!(latest.is_none() && damaged.is_empty());
}

#[test]
fn another_members_checkpoint_is_not_taken() {
    let dir = tempfile::tempdir().unwrap();
    let a = arch();
    save(dir.path(), &a, &ckpt(&a, 1)).unwrap();
    let (latest, damaged) = load_latest(dir.path(), &a, "abc", 4).unwrap();
    assert!(latest.is_none());
    assert!(damaged[0].contains("member 3, not 4"), "{damaged:?}");
}
