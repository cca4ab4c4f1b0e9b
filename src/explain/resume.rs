//! Explain's finished packs, kept on disk until the stage is written, so an interrupted
//! explain (Ctrl-C, SIGTERM, a lost node) goes on where it stopped instead of starting over.
//!
//! A pack's file is only taken back when its key matches (the fingerprint of everything its
//! numbers depend on: the run's config, the split, the members and their weights, the batch
//! bound, the kind of device and kernels, agra's and libtorch's versions), its content hash
//! holds and it has the methods and arrays this config makes. Anything else, stale or damaged,
//! is computed again.

use super::{MethodPart, PackResult};
use crate::store::{f32_bytes, f32s, RunDir};
use anyhow::{ensure, Context, Result};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;

const FORMAT: &str = "agra-explain-pack-1";

/// What a pack's results depend on beyond its members: the same for every pack of a run.
#[derive(Clone)]
pub struct Basis {
    pub config_hash: String,
    pub split: String,
    pub max_batch: Option<usize>,
    /// The kinds of device and their convolution layouts ("cpu:ChannelsLast"): not their
    /// number, which changes no pack's numbers.
    pub devices: String,
    pub kernels: String,
}

/// The arrays a method's part has beside members, mean and m2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extras {
    None,
    /// The descent's iterations and convergence per pair.
    Descent,
    /// Integrated gradients' completeness gap per pair.
    Gap,
}

/// The key of one pack: the shared context, then each member's id and weights.
pub fn key(basis: &Basis, members: &[(usize, &[f32])]) -> String {
    let mut h = Sha256::new();
    let c = basis;
    let build = (env!("CARGO_PKG_VERSION"), option_env!("AGRA_GIT_COMMIT"), env!("AGRA_LIBTORCH_VERSION"));
    h.update(format!("{}|{}|{:?}|{}|{}|{build:?}", c.config_hash, c.split, c.max_batch, c.devices, c.kernels));
    for (id, weights) in members {
        h.update((*id as u64).to_le_bytes());
        h.update((weights.len() as u64).to_le_bytes());
        weights.iter().for_each(|w| h.update(w.to_le_bytes()));
    }
    h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

pub fn dir(run: &RunDir) -> PathBuf {
    run.explain_dir().join("packs")
}

/// Packs kept by an explain that has not finished (unchecked: the next explain checks them).
pub fn kept(run: &RunDir) -> usize {
    std::fs::read_dir(dir(run)).map_or(0, |entries| {
        entries.flatten().filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with("pack-") && !n.contains(".tmp."))).count()
    })
}

fn path(run: &RunDir, pack: usize) -> PathBuf {
    dir(run).join(format!("pack-{pack:04}.safetensors"))
}

pub fn save(run: &RunDir, pack: usize, key: &str, result: &PackResult) -> Result<()> {
    crate::store::write_atomic(&path(run, pack), &encode(key, result)?)
}

fn encode(key: &str, result: &PackResult) -> Result<Vec<u8>> {
    let mut arrays: Vec<(String, Dtype, Vec<u8>)> = Vec::new();
    let mut meta = HashMap::from([("format".to_string(), FORMAT.to_string()), ("key".to_string(), key.to_string())]);
    let names: Vec<&str> = result.methods.iter().map(|(n, _)| n.as_str()).collect();
    meta.insert("methods".into(), names.join(","));
    for (name, part) in &result.methods {
        arrays.push((format!("{name}.members"), Dtype::F32, f32_bytes(&part.members)));
        arrays.push((format!("{name}.mean"), Dtype::F32, f32_bytes(&part.mean)));
        arrays.push((format!("{name}.m2"), Dtype::F32, f32_bytes(&part.m2)));
        if let Some(v) = &part.iterations {
            arrays.push((format!("{name}.iterations"), Dtype::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect()));
        }
        if let Some(v) = &part.converged {
            arrays.push((format!("{name}.converged"), Dtype::U8, v.clone()));
        }
        if let Some(v) = &part.gap {
            arrays.push((format!("{name}.gap"), Dtype::F32, f32_bytes(v)));
        }
        meta.insert(format!("{name}.seconds"), part.seconds.to_string());
        meta.insert(format!("{name}.evaluations"), part.evaluations.to_string());
    }
    meta.insert("content_sha256".into(), digest(key, &result.methods));
    let views = arrays
        .iter()
        .map(|(n, dtype, bytes)| Ok((n.as_str(), TensorView::new(*dtype, vec![bytes.len() / dtype.size()], bytes)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(safetensors::serialize(views, &Some(meta))?)
}

/// The pack's results if its file holds them under this key (None: no file, or a stale one;
/// an error: a damaged one). `layout` is the methods a pack of this config has, in order, and
/// `sizes` = (members x signals x values, signals x values, members x signals), the lengths of
/// its arrays.
pub fn load(
    run: &RunDir,
    pack: usize,
    key: &str,
    positions: &[usize],
    layout: &[(&str, Extras)],
    sizes: [usize; 3],
) -> Result<Option<PackResult>> {
    let path = path(run, pack);
    let Ok(bytes) = crate::store::read(&path) else { return Ok(None) };
    let methods = decode(&bytes, key, layout, sizes).with_context(|| format!("{} is damaged", path.display()))?;
    Ok(methods.map(|methods| PackResult { positions: positions.to_vec(), methods }))
}

/// A hash of everything a pack holds, so a flipped bit is caught as in checkpoints.
fn digest(key: &str, methods: &[(String, MethodPart)]) -> String {
    let mut h = Sha256::new();
    h.update(key);
    let floats = |h: &mut Sha256, v: &[f32]| v.iter().for_each(|x| h.update(x.to_le_bytes()));
    for (name, p) in methods {
        h.update(format!("|{name}|{}|{}|", p.seconds.to_bits(), p.evaluations.to_bits()));
        for v in [&p.members, &p.mean, &p.m2] {
            floats(&mut h, v);
        }
        h.update(format!("|{:?}|{:?}|", p.iterations, p.converged));
        floats(&mut h, p.gap.as_deref().unwrap_or_default());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn decode(bytes: &[u8], key: &str, layout: &[(&str, Extras)], [values, means, pairs]: [usize; 3]) -> Result<Option<Vec<(String, MethodPart)>>> {
    let st = SafeTensors::deserialize(bytes)?;
    let (_, meta) = SafeTensors::read_metadata(bytes)?;
    let meta = meta.metadata().clone().unwrap_or_default();
    let field = |k: &str| meta.get(k).map(String::as_str);
    if field("format") != Some(FORMAT) || field("key") != Some(key) {
        return Ok(None);
    }
    let array = |name: &str, dtype: Dtype, len: usize| -> Result<Option<Vec<u8>>> {
        let Ok(view) = st.tensor(name) else { return Ok(None) };
        ensure!(view.dtype() == dtype && view.shape() == [len], "{name}: wrong dtype or length");
        Ok(Some(view.data().to_vec()))
    };
    let number = |k: &str| -> Result<f64> {
        field(k).and_then(|v| v.parse().ok()).filter(|v: &f64| v.is_finite()).with_context(|| format!("{k} missing"))
    };
    let names: Vec<&str> = layout.iter().map(|(n, _)| *n).collect();
    ensure!(field("methods") == Some(names.join(",").as_str()), "methods {:?}, expected {names:?}", field("methods"));
    let mut methods = Vec::new();
    for &(name, extras) in layout {
        let required = |what: &str, len| -> Result<Vec<u8>> {
            array(&format!("{name}.{what}"), Dtype::F32, len)?.with_context(|| format!("{name}.{what} missing"))
        };
        let part = MethodPart {
            members: f32s(&required("members", values)?),
            mean: f32s(&required("mean", means)?),
            m2: f32s(&required("m2", means)?),
            iterations: array(&format!("{name}.iterations"), Dtype::I64, pairs)?
                .map(|b| b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect()),
            converged: array(&format!("{name}.converged"), Dtype::U8, pairs)?,
            gap: array(&format!("{name}.gap"), Dtype::F32, pairs)?.map(|b| f32s(&b)),
            seconds: number(&format!("{name}.seconds"))?,
            evaluations: number(&format!("{name}.evaluations"))?,
        };
        let has = (part.iterations.is_some(), part.converged.is_some(), part.gap.is_some());
        let want = (extras == Extras::Descent, extras == Extras::Descent, extras == Extras::Gap);
        ensure!(has == want, "{name}: per-pair arrays {has:?}, expected {want:?}");
        methods.push((name.to_string(), part));
    }
    ensure!(field("content_sha256") == Some(digest(key, &methods).as_str()), "content hash mismatch");
    Ok(Some(methods))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(offset: f32, iterative: bool) -> MethodPart {
        MethodPart {
            members: (0..12).map(|i| i as f32 + offset).collect(),
            mean: vec![offset; 6],
            m2: vec![0.5; 6],
            iterations: iterative.then(|| vec![3, 7]),
            converged: iterative.then(|| vec![1, 0]),
            gap: (!iterative).then(|| vec![0.25, 0.5]),
            seconds: 1.5,
            evaluations: 40.0,
        }
    }

    #[test]
    fn a_pack_comes_back_only_under_its_key_and_sizes() {
        let result = PackResult { positions: vec![4], methods: vec![("grad".into(), part(1.0, true)), ("ig".into(), part(2.0, false))] };
        let layout = [("grad", Extras::Descent), ("ig", Extras::Gap)];
        let bytes = encode("k1", &result).unwrap();
        let back = decode(&bytes, "k1", &layout, [12, 6, 2]).unwrap().expect("same key");
        for ((name, a), (want, b)) in back.iter().zip(&result.methods) {
            assert_eq!(name, want);
            assert_eq!((&a.members, &a.mean, &a.m2, &a.iterations, &a.converged, &a.gap), (&b.members, &b.mean, &b.m2, &b.iterations, &b.converged, &b.gap));
            assert_eq!((a.seconds, a.evaluations), (b.seconds, b.evaluations));
        }
        assert!(decode(&bytes, "k2", &layout, [12, 6, 2]).unwrap().is_none(), "another key: stale");
        assert!(decode(&bytes, "k1", &layout, [24, 6, 2]).is_err(), "other sizes");
        assert!(decode(&bytes[..bytes.len() - 3], "k1", &layout, [12, 6, 2]).is_err(), "truncated");
        assert!(decode(&bytes, "k1", &[("ig", Extras::Gap), ("grad", Extras::Descent)], [12, 6, 2]).is_err(), "other order");
        assert!(decode(&bytes, "k1", &[("grad", Extras::None), ("ig", Extras::Gap)], [12, 6, 2]).is_err(), "other arrays");
        // Any one flipped byte of the payload (the tensors sit at the end) is caught.
        for at in [bytes.len() - 1, bytes.len() - 30, bytes.len() - 60] {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x10;
            assert!(decode(&flipped, "k1", &layout, [12, 6, 2]).is_err(), "byte {at}");
        }
    }

    #[test]
    fn the_key_changes_with_every_input() {
        let basis = Basis { config_hash: "c".into(), split: "test".into(), max_batch: None, devices: "cpu".into(), kernels: "Native".into() };
        let (w, v) = ([1.0f32, 2.0], [1.0f32, 2.5]);
        let k = key(&basis, &[(0, &w)]);
        assert_eq!(k, key(&basis, &[(0, &w)]));
        for other in [
            key(&basis, &[(1, &w)]),
            key(&basis, &[(0, &v)]),
            key(&Basis { split: "train".into(), ..basis.clone() }, &[(0, &w)]),
            key(&Basis { max_batch: Some(64), ..basis.clone() }, &[(0, &w)]),
            key(&Basis { devices: "cuda".into(), ..basis.clone() }, &[(0, &w)]),
            key(&Basis { kernels: "Libtorch".into(), ..basis.clone() }, &[(0, &w)]),
        ] {
            assert_ne!(k, other);
        }
    }
}
