use super::*;
use crate::config::{Config, Sources};
use crate::error::exit_code;

fn config(sets: &[&str]) -> Config {
    Config::load(&Sources { preset: "quick".into(), file: None, sets: sets.iter().map(|s| s.to_string()).collect() }).unwrap()
}

#[test]
fn a_new_directory_records_config_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("run");
    let run = RunDir::open(&root, &config(&[])).unwrap();
    assert!(root.join("config.toml").exists());
    let meta = run.read_meta().unwrap().unwrap();
    assert_eq!(meta.config_hash, config(&[]).hash());
    assert!(!meta.libtorch_version.is_empty());
    let (again, _) = RunDir::inspect(&root).unwrap().unwrap();
    assert_eq!(again.config, run.config);
    RunDir::open(&root, &config(&[])).unwrap();
}

#[test]
fn another_config_is_refused_naming_the_difference() {
    let dir = tempfile::tempdir().unwrap();
    RunDir::open(dir.path(), &config(&[])).unwrap();
    let before = std::fs::read(dir.path().join("config.toml")).unwrap();
    let err = RunDir::open(dir.path(), &config(&["train.epochs=9"])).unwrap_err();
    assert_eq!(exit_code(&err), 2);
    assert!(err.to_string().contains("train.epochs"), "{err}");
    assert_eq!(std::fs::read(dir.path().join("config.toml")).unwrap(), before);
}

/// A run.json whose hash is not its own config.toml's is named, rather than the command that
/// would go on with that config.toml (which is the one given).
#[test]
fn a_damaged_config_hash_names_run_json() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::open(dir.path(), &config(&[])).unwrap();
    let path = dir.path().join("run.json");
    let original = std::fs::read_to_string(&path).unwrap();
    for wrong in ["", "deadbeef"] {
        std::fs::write(&path, original.replace(&run.config.hash(), wrong)).unwrap();
        let err = RunDir::open(dir.path(), &config(&[])).unwrap_err();
        assert_eq!(exit_code(&err), 2);
        assert!(err.to_string().contains("run.json is damaged"), "{wrong:?}: {err}");
    }
}

#[test]
fn foreign_directories_and_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("thesis.tex"), "x").unwrap();
    let err = RunDir::open(dir.path(), &config(&[])).unwrap_err();
    assert_eq!(exit_code(&err), 2);
    assert!(!dir.path().join("run.json").exists());
    let file = dir.path().join("thesis.tex");
    assert_eq!(exit_code(&RunDir::open(&file, &config(&[])).unwrap_err()), 2);
}

/// Shards of a job array open the same new directory at once: what one of them is writing
/// (a config temp file, the write probe, the locks) must not make another refuse it.
#[test]
fn a_directory_another_agra_is_creating_is_not_foreign() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".config.agra.aP7c1D.tmp.toml"), "x").unwrap();
    std::fs::write(dir.path().join(".agra-write-test"), "").unwrap();
    std::fs::create_dir(dir.path().join("locks")).unwrap();
    RunDir::open(dir.path(), &config(&[])).unwrap();
    assert!(!dir.path().join(".config.agra.aP7c1D.tmp.toml").exists(), "a temp file left when no one holds the meta lock is stale");
    let fresh = dir.path().join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    std::fs::write(fresh.join("notes.tmp.txt"), "x").unwrap();
    assert_eq!(exit_code(&RunDir::open(&fresh, &config(&[])).unwrap_err()), 2, "a visible .tmp. file is not ours");
}

#[test]
fn stages_record_start_and_finish() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::open(dir.path(), &config(&[])).unwrap();
    assert!(!run.is_complete(Stage::Report).unwrap());
    run.stage_started(Stage::Report, &["cpu".into()]).unwrap();
    assert!(!run.is_complete(Stage::Report).unwrap());
    run.stage_finished(Stage::Report, 1.5).unwrap();
    assert!(!run.is_complete(Stage::Report).unwrap(), "finished, but report.md is missing");
    std::fs::create_dir_all(run.report_dir()).unwrap();
    std::fs::write(run.report_dir().join("report.md"), "# agra report").unwrap();
    assert!(run.is_complete(Stage::Report).unwrap());
    let meta = run.read_meta().unwrap().unwrap();
    assert_eq!(meta.stages["report"].devices, ["cpu"]);
}

#[test]
fn a_stage_lock_excludes_a_second_writer() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir::open(dir.path(), &config(&[])).unwrap();
    let _held = run.stage_lock("explain").unwrap();
    assert_eq!(exit_code(&run.stage_lock("explain").unwrap_err()), 2);
    run.stage_lock("member-0001").unwrap();
}
