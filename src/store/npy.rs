//! NumPy `.npy` files (format 1.0, little-endian, C order) for the arrays Python users load
//! with `np.load`. Written atomically; read back with shape and dtype checked.

use anyhow::{bail, Context, Result};
use std::path::Path;

/// Element types we export: f32 attributions and metrics, i64 counts, u8 masks.
pub trait Element: Copy {
    const DESCR: &'static str;
    fn to_le(self, out: &mut Vec<u8>);
    fn from_le(bytes: &[u8]) -> Self;
}

macro_rules! element {
    ($t:ty, $descr:literal) => {
        impl Element for $t {
            const DESCR: &'static str = $descr;
            fn to_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn from_le(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(bytes.try_into().expect("exact element size"))
            }
        }
    };
}
element!(f32, "<f4");
element!(f64, "<f8");
element!(i64, "<i8");
element!(u8, "|u1");

impl Element for bool {
    const DESCR: &'static str = "|b1";
    fn to_le(self, out: &mut Vec<u8>) {
        out.push(self as u8);
    }
    fn from_le(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
}

pub fn to_bytes<T: Element>(shape: &[usize], data: &[T]) -> Result<Vec<u8>> {
    let numel: usize = shape.iter().product();
    if numel != data.len() {
        bail!("npy: shape {shape:?} holds {numel} values, got {}", data.len());
    }
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if shape.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {tuple}, }}", T::DESCR);
    // Magic (6) + version (2) + length (2) + header + '\n' is padded to a multiple of 64.
    let pad = 64 - (10 + header.len() + 1) % 64;
    header.push_str(&" ".repeat(pad % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + std::mem::size_of_val(data));
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for &v in data {
        v.to_le(&mut out);
    }
    Ok(out)
}

#[cfg(test)]
pub fn write<T: Element>(path: &Path, shape: &[usize], data: &[T]) -> Result<()> {
    super::write_atomic(path, &to_bytes(shape, data)?)
}

/// Reads an array written by `write` (or by numpy with the same dtype, C order).
pub fn read<T: Element>(path: &Path) -> Result<(Vec<usize>, Vec<T>)> {
    let bytes = super::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&bytes).with_context(|| format!("{} is not a valid {} .npy file", path.display(), T::DESCR))
}

fn parse<T: Element>(bytes: &[u8]) -> Result<(Vec<usize>, Vec<T>)> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" || bytes[6] != 1 {
        bail!("bad magic");
    }
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(bytes.get(10..10 + len).context("short header")?)?;
    if !header.contains(&format!("'descr': '{}'", T::DESCR)) || header.contains("'fortran_order': True") {
        bail!("dtype or order differs: {header}");
    }
    let inner = header.split("'shape': (").nth(1).and_then(|s| s.split(')').next()).context("no shape")?;
    let shape: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().context("bad shape"))
        .collect::<Result<_>>()?;
    let size = std::mem::size_of::<T>();
    let body = &bytes[10 + len..];
    let numel: usize = shape.iter().product();
    if body.len() != numel * size {
        bail!("expected {} bytes of data, found {}", numel * size, body.len());
    }
    Ok((shape, body.chunks_exact(size).map(T::from_le).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_header_alignment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.npy");
        let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5).collect();
        write(&path, &[2, 3, 4], &data).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        let (shape, back) = read::<f32>(&path).unwrap();
        assert_eq!(shape, [2, 3, 4]);
        assert_eq!(back, data);
        write(&path, &[5], &[1i64, 2, 3, 4, 5]).unwrap();
        assert_eq!(read::<i64>(&path).unwrap(), (vec![5], vec![1, 2, 3, 4, 5]));
        assert!(read::<f32>(&path).is_err(), "dtype is checked");
    }

    #[test]
    fn truncated_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.npy");
        let bytes = to_bytes(&[4], &[1f32, 2., 3., 4.]).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(read::<f32>(&path).is_err());
        assert!(to_bytes(&[3], &[1f32]).is_err());
    }
}
