//! Saving and loading a `Split`: one safetensors file per split (what the tools read back),
//! plus a plain `.npy` export for looking at the data from Python.
//!
//! The safetensors header is built here rather than by `safetensors::serialize`, because that
//! writes the `__metadata__` map from a `HashMap` whose key order changes from run to run, and
//! the same data must give byte-identical files. The layout is otherwise exactly what the
//! crate writes (tensors ordered by dtype alignment then name, header padded to 8 bytes), and
//! files are read back with the `safetensors` crate itself, so any reader accepts them.

use super::generate::{Perturbation, Split};
use anyhow::{bail, ensure, Context};
use crate::store::{f32_bytes, f32s, npy};
use safetensors::{Dtype, SafeTensors};
use std::path::Path;

const FORMAT: &str = "agra-split";
const VERSION: &str = "1";
/// Columns of the `perturbations` table: signal index, position, dim, amplitude, width.
const PERTURBATION_COLUMNS: usize = 5;
/// Integers above this are not all representable in f32, and the perturbation table stores
/// the signal index and dimension as f32.
const MAX_EXACT_F32_INT: usize = 1 << 24;

/// Write `split` to `path` atomically as a safetensors file. `origin` (the fingerprint of the
/// config that made it) goes into the metadata, so a file copied in from another run is known.
pub fn write_split(split: &Split, origin: &str, path: &Path) -> anyhow::Result<()> {
    let bytes = encode_split(split, origin).with_context(|| format!("encoding split for {}", path.display()))?;
    crate::store::write_atomic(path, &bytes).with_context(|| format!("writing split {}", path.display()))
}

/// Read a split written by `write_split`, checking names, dtypes and shapes agree, with its
/// origin (absent from files written before agra recorded it).
pub fn read_split(path: &Path) -> anyhow::Result<(Split, Option<String>)> {
    let bytes = crate::store::read(path).with_context(|| format!("reading split {}", path.display()))?;
    // However it is damaged, the split is the user's to delete (exit 2), as one of another
    // config is (`data::read`).
    decode_split(&bytes).map_err(|e| {
        let why = format!("{} is damaged: {e:#}; delete it and agra makes it again", path.display());
        crate::error::UsageError::new(why).into()
    })
}

/// Write `split` as `.npy` files `dir/{prefix}_{name}.npy`, one per tensor of the
/// safetensors file, with the same names, shapes and dtypes.
pub fn export_npy(split: &Split, dir: &Path, prefix: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let shape = [split.len(), split.dims, split.length];
    let table = perturbation_table(split)?;
    let arrays: Vec<(&str, Vec<u8>)> = vec![
        ("perturbed", npy::to_bytes(&shape, &split.perturbed)?),
        ("ideal", npy::to_bytes(&shape, &split.ideal)?),
        ("attribution", npy::to_bytes(&shape, &split.attribution)?),
        ("mask", npy::to_bytes(&shape, &split.mask)?),
        ("scores", npy::to_bytes(&[split.len()], &split.scores)?),
        ("perturbations", npy::to_bytes(&[table.len() / PERTURBATION_COLUMNS, PERTURBATION_COLUMNS], &table)?),
    ];
    for (name, bytes) in arrays {
        let path = dir.join(format!("{prefix}_{name}.npy"));
        crate::store::write_atomic(&path, &bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The perturbations flattened to rows of `PERTURBATION_COLUMNS`, in signal order.
fn perturbation_table(split: &Split) -> anyhow::Result<Vec<f32>> {
    ensure!(
        split.len() <= MAX_EXACT_F32_INT && split.dims <= MAX_EXACT_F32_INT,
        "too many signals or dims ({}, {}) to index exactly in f32",
        split.len(),
        split.dims
    );
    let mut table = Vec::new();
    for (i, ps) in split.perturbations.iter().enumerate() {
        for p in ps {
            table.extend_from_slice(&[i as f32, p.position, p.dim as f32, p.amplitude, p.width]);
        }
    }
    Ok(table)
}

fn encode_split(split: &Split, origin: &str) -> anyhow::Result<Vec<u8>> {
    let n = split.len();
    let row = split.row_len();
    ensure!(
        split.perturbed.len() == n * row
            && split.ideal.len() == n * row
            && split.attribution.len() == n * row
            && split.mask.len() == n * row
            && split.perturbations.len() == n,
        "split arrays disagree with {n} signals of {}x{}",
        split.dims,
        split.length
    );
    let table = perturbation_table(split)?;
    let signal_shape = vec![n, split.dims, split.length];
    let mut tensors = vec![
        ("attribution", Dtype::F32, signal_shape.clone(), f32_bytes(&split.attribution)),
        ("ideal", Dtype::F32, signal_shape.clone(), f32_bytes(&split.ideal)),
        ("mask", Dtype::U8, signal_shape.clone(), split.mask.clone()),
        ("perturbations", Dtype::F32, vec![table.len() / PERTURBATION_COLUMNS, PERTURBATION_COLUMNS], f32_bytes(&table)),
        ("perturbed", Dtype::F32, signal_shape, f32_bytes(&split.perturbed)),
        ("scores", Dtype::F32, vec![n], f32_bytes(&split.scores)),
    ];
    // In the file's order, so the hash covers the bytes after the header as they lie.
    tensors.sort_by(|a, b| by_layout((a.0, a.1), (b.0, b.1)));
    let content = crate::store::sha256_hex(&tensors.iter().map(|t| t.3.as_slice()).collect::<Vec<_>>());
    let metadata = [("format", FORMAT), ("version", VERSION), ("origin", origin), ("content_sha256", &content)];
    Ok(encode_safetensors(tensors, &metadata))
}

/// The order the `safetensors` crate lays tensors out in: dtype alignment descending, then name.
fn by_layout(a: (&str, Dtype), b: (&str, Dtype)) -> std::cmp::Ordering {
    b.1.cmp(&a.1).then(a.0.cmp(b.0))
}

/// The safetensors byte layout with a deterministic header: metadata keys in the order given,
/// tensors sorted as the `safetensors` crate sorts them (dtype alignment descending, then name)
/// so the data of wider types stays aligned.
fn encode_safetensors(
    mut tensors: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)>,
    metadata: &[(&str, &str)],
) -> Vec<u8> {
    tensors.sort_by(|a, b| by_layout((a.0, a.1), (b.0, b.1)));
    let json = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut entries = Vec::new();
    if !metadata.is_empty() {
        let fields: Vec<String> = metadata.iter().map(|(k, v)| format!("{}:{}", json(k), json(v))).collect();
        entries.push(format!("\"__metadata__\":{{{}}}", fields.join(",")));
    }
    let mut offset = 0;
    for (name, dtype, shape, data) in &tensors {
        let shape: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        entries.push(format!(
            "{}:{{\"dtype\":\"{dtype:?}\",\"shape\":[{}],\"data_offsets\":[{offset},{}]}}",
            json(name),
            shape.join(","),
            offset + data.len()
        ));
        offset += data.len();
    }
    let mut header = format!("{{{}}}", entries.join(",")).into_bytes();
    header.resize(header.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + header.len() + offset);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    for (_, _, _, data) in &tensors {
        out.extend_from_slice(data);
    }
    out
}

/// The tensor `name` checked against `dtype` and, where given, each expected dimension.
fn tensor<'a>(
    st: &SafeTensors<'a>,
    name: &str,
    dtype: Dtype,
    shape: &[Option<usize>],
) -> anyhow::Result<(Vec<usize>, &'a [u8])> {
    let view = st.tensor(name).with_context(|| format!("missing tensor {name:?}"))?;
    ensure!(view.dtype() == dtype, "tensor {name:?} is {:?}, expected {dtype:?}", view.dtype());
    let got = view.shape().to_vec();
    let fits = got.len() == shape.len() && got.iter().zip(shape).all(|(g, e)| e.is_none_or(|e| e == *g));
    ensure!(fits, "tensor {name:?} has shape {got:?}, expected {shape:?}");
    Ok((got, view.data()))
}

/// A whole number in `0..bound` stored as f32, or an error naming what it was.
fn index(value: f32, bound: usize, what: &str, row: usize) -> anyhow::Result<usize> {
    ensure!(
        value.fract() == 0.0 && value >= 0.0 && (value as f64) < bound as f64,
        "perturbation row {row}: {what} {value} not an integer in 0..{bound}"
    );
    Ok(value as usize)
}

fn decode_split(bytes: &[u8]) -> anyhow::Result<(Split, Option<String>)> {
    let st = SafeTensors::deserialize(bytes).context("not a safetensors file")?;
    let (_, meta) = SafeTensors::read_metadata(bytes).context("not a safetensors file")?;
    let meta = meta.metadata().as_ref();
    let field = |k: &str| meta.and_then(|m| m.get(k)).map(String::as_str);
    if field("format") != Some(FORMAT) {
        bail!("not an {FORMAT} file (metadata format is {:?})", field("format"));
    }
    if field("version") != Some(VERSION) {
        bail!("unsupported {FORMAT} version {:?}, expected {VERSION:?}", field("version"));
    }
    // The tensors' bytes follow the header; files written before the hash have none.
    if let Some(expected) = field("content_sha256") {
        let header = u64::from_le_bytes(bytes[..8].try_into()?) as usize;
        if crate::store::sha256_hex(&[&bytes[8 + header..]]) != expected {
            bail!("its contents changed after agra wrote it (content hash)");
        }
    }
    let expected = ["attribution", "ideal", "mask", "perturbations", "perturbed", "scores"];
    let mut names: Vec<&str> = st.names().into_iter().map(String::as_str).collect();
    names.sort_unstable();
    ensure!(names == expected, "tensors are {names:?}, expected {expected:?}");

    let (shape, perturbed) = tensor(&st, "perturbed", Dtype::F32, &[None, None, None])?;
    let (n, dims, length) = (shape[0], shape[1], shape[2]);
    let signal = [Some(n), Some(dims), Some(length)];
    let (_, ideal) = tensor(&st, "ideal", Dtype::F32, &signal)?;
    let (_, attribution) = tensor(&st, "attribution", Dtype::F32, &signal)?;
    let (_, mask) = tensor(&st, "mask", Dtype::U8, &signal)?;
    let (_, scores) = tensor(&st, "scores", Dtype::F32, &[Some(n)])?;
    let (_, table) = tensor(&st, "perturbations", Dtype::F32, &[None, Some(PERTURBATION_COLUMNS)])?;

    let mut perturbations = vec![Vec::new(); n];
    for (row, r) in f32s(table).chunks_exact(PERTURBATION_COLUMNS).enumerate() {
        let signal = index(r[0], n, "signal index", row)?;
        let dim = index(r[2], dims, "dim", row)?;
        ensure!(
            r[1].is_finite() && r[3].is_finite() && r[4].is_finite(),
            "perturbation row {row}: non-finite value"
        );
        perturbations[signal].push(Perturbation { position: r[1], dim, amplitude: r[3], width: r[4] });
    }
    let split = Split {
        dims,
        length,
        perturbed: f32s(perturbed),
        ideal: f32s(ideal),
        attribution: f32s(attribution),
        mask: mask.to_vec(),
        scores: f32s(scores),
        perturbations,
    };
    Ok((split, field("origin").map(str::to_string)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DataConfig;
    use crate::data::generate::generate;

    fn quick() -> DataConfig {
        DataConfig { signals: 24, train: 16, test: 8, length: 32, ..crate::data::generate::tests::quick() }
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (train, test) = generate(&quick(), 1);
        for (split, name) in [(&train, "train.safetensors"), (&test, "test.safetensors")] {
            let path = dir.path().join(name);
            write_split(split, "abc", &path).expect("write");
            assert_eq!(read_split(&path).expect("read"), (split.clone(), Some("abc".to_string())));
        }
    }

    #[test]
    fn empty_split_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, test) = generate(&DataConfig { test: 0, ..quick() }, 1);
        let path = dir.path().join("empty.safetensors");
        write_split(&test, "o", &path).expect("write");
        let (back, _) = read_split(&path).expect("read");
        assert_eq!((back.dims, back.length, back.len()), (2, 32, 0));
    }

    #[test]
    fn files_are_byte_identical() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        write_split(&generate(&quick(), 3).0, "o", &a).expect("write a");
        write_split(&generate(&quick(), 3).0, "o", &b).expect("write b");
        assert_eq!(std::fs::read(&a).expect("a"), std::fs::read(&b).expect("b"));
    }

    #[test]
    fn header_matches_safetensors_crate() {
        // With a single metadata key the crate's HashMap order cannot vary, so its output
        // must equal ours byte for byte.
        let (train, _) = generate(&quick(), 4);
        let data = f32_bytes(&train.perturbed);
        let mask = train.mask.clone();
        let shape = vec![train.len(), 2, 32];
        let ours = encode_safetensors(
            vec![("x", Dtype::F32, shape.clone(), data.clone()), ("m", Dtype::U8, shape.clone(), mask.clone())],
            &[("format", FORMAT)],
        );
        let views = vec![
            ("x", safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), &data).expect("x")),
            ("m", safetensors::tensor::TensorView::new(Dtype::U8, shape, &mask).expect("m")),
        ];
        let meta = Some([("format".to_string(), FORMAT.to_string())].into_iter().collect());
        assert_eq!(ours, safetensors::serialize(views, &meta).expect("serialize"));
    }

    #[test]
    fn npy_export_writes_every_tensor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (train, _) = generate(&quick(), 5);
        export_npy(&train, dir.path(), "train").expect("export");
        for name in ["perturbed", "ideal", "attribution", "mask", "scores", "perturbations"] {
            let bytes = std::fs::read(dir.path().join(format!("train_{name}.npy"))).expect(name);
            assert!(bytes.starts_with(b"\x93NUMPY"), "{name}");
        }
        let scores = std::fs::read(dir.path().join("train_scores.npy")).expect("scores");
        assert!(scores.ends_with(&f32_bytes(&train.scores)));
    }

    #[test]
    fn bad_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("good");
        write_split(&generate(&quick(), 6).0, "o", &good).expect("write");
        let bytes = std::fs::read(&good).expect("read");
        let header = u64::from_le_bytes(bytes[..8].try_into().expect("8")) as usize;
        let mut cases: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"garbage".to_vec(),
            (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect(),
            bytes[..bytes.len() / 2].to_vec(),
            bytes[..bytes.len() - 1].to_vec(),
            bytes[..8 + header].to_vec(),
            bytes[..5].to_vec(),
        ];
        // Each single-byte corruption of the header: any outcome but a panic is fine, and a
        // successful read must still be a consistent split.
        for i in 8..8 + header {
            let mut b = bytes.clone();
            b[i] ^= 0x5a;
            cases.push(b);
        }
        for (k, case) in cases.iter().enumerate() {
            let path = dir.path().join(format!("bad{k}"));
            std::fs::write(&path, case).expect("write case");
            match read_split(&path) {
                Ok((s, _)) => assert!(k >= 7 && s.perturbed.len() == s.len() * s.row_len()),
                Err(e) => assert!(format!("{e:#}").contains(&path.display().to_string())),
            }
        }
        assert!(read_split(&dir.path().join("missing")).is_err());
    }

    /// A value changed in place (an edit, a flipped bit) leaves a well-formed file behind.
    #[test]
    fn a_changed_value_is_caught_by_the_content_hash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x");
        write_split(&generate(&quick(), 6).0, "o", &path).expect("write");
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1; // the mask's last value
        std::fs::write(&path, &bytes).expect("write");
        let err = format!("{:#}", read_split(&path).unwrap_err());
        assert!(err.contains("content hash"), "{err}");
    }

    #[test]
    fn wrong_contents_are_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (train, _) = generate(&quick(), 8);
        let path = dir.path().join("x");
        let write = |tensors, meta: &[(&str, &str)]| {
            std::fs::write(&path, encode_safetensors(tensors, meta)).expect("write");
            read_split(&path)
        };
        let shape = vec![train.len(), 2, 32];
        let f = f32_bytes(&train.perturbed);
        // Right layout but a foreign format tag.
        assert!(write(vec![("perturbed", Dtype::F32, shape.clone(), f.clone())], &[("format", "other")]).is_err());
        // Missing tensors.
        let meta = [("format", FORMAT), ("version", VERSION)];
        assert!(write(vec![("perturbed", Dtype::F32, shape.clone(), f.clone())], &meta).is_err());
        // Mask with the wrong dtype.
        let mut good = encode_split(&train, "o").expect("encode");
        std::fs::write(&path, &good).expect("write");
        assert!(read_split(&path).is_ok());
        let text = String::from_utf8_lossy(&good[8..]).into_owned();
        let at = 8 + text.find("\"U8\"").expect("mask dtype");
        good[at + 1..at + 3].copy_from_slice(b"I8");
        std::fs::write(&path, &good).expect("write");
        let err = format!("{:#}", read_split(&path).expect_err("I8 mask"));
        assert!(err.contains("mask"), "{err}");
    }
}
