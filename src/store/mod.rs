//! Everything on disk: the run directory and its metadata, locks, member checkpoints and
//! exported tensors. Writes are atomic (temp file, fsync, rename), so a crash at any moment
//! leaves either the old file or the new one, never a torn one.

pub mod checkpoint;
pub mod lock;
pub mod npy;
pub mod rundir;

pub use rundir::RunDir;

use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically: a temp file in the same directory, fsync, rename, fsync
/// of the directory. The temp name keeps the real extension last (`x.tmp.safetensors`) so
/// tools that pick a format from the extension still recognise it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let mut tmp = temp_file(dir, name).with_context(|| format!("creating a temp file in {}", dir.display()))?;
    tmp.write_all(bytes).with_context(|| format!("writing {}", path.display()))?;
    tmp.as_file().sync_all().with_context(|| format!("syncing {}", path.display()))?;
    tmp.persist(path).with_context(|| format!("renaming into {}", path.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// A temp file in `dir` for the file `name`, named as `is_temp_name` recognises.
fn temp_file(dir: &Path, name: &str) -> std::io::Result<tempfile::NamedTempFile> {
    let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
    // tempfile's default 0600 would keep every output from the user's group (a shared
    // cluster project); 0666 goes through the umask like any other file the user makes.
    tempfile::Builder::new()
        .prefix(&format!(".{stem}.{TEMP_MARK}."))
        .rand_bytes(TEMP_RANDOM)
        .suffix(&format!(".tmp.{ext}"))
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
        .tempfile_in(dir)
}

/// Whether a file name is one of `write_atomic`'s temp files (`.<stem>.agra.<6 random>.tmp.<ext>`),
/// and not a user's own hidden file (`.notes.draft1.tmp.md` is one: the sweeps must leave it).
pub fn is_temp_name(name: &str) -> bool {
    let Some((head, _ext)) = name.strip_prefix('.').and_then(|rest| rest.rsplit_once(".tmp.")) else { return false };
    head.rsplit_once('.').is_some_and(|(stem, random)| {
        stem.strip_suffix(TEMP_MARK).is_some_and(|s| s.ends_with('.'))
            && random.len() == TEMP_RANDOM
            && random.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// What marks a temp file as agra's, beside the random part.
const TEMP_MARK: &str = "agra";

/// The random part of a temp file's name (tempfile's default, pinned so `is_temp_name` holds).
const TEMP_RANDOM: usize = 6;

/// Reads a file of a run directory. agra writes only regular files there; anything else put in
/// a file's place is refused (a FIFO would block the read forever, a device never end).
pub fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"));
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// `read` for a text file.
pub fn read_text(path: &Path) -> std::io::Result<String> {
    String::from_utf8(read(path)?).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// A stage's JSON output, for the stage after it: one that is not there is the user's to make
/// (exit 2, "run `agra <stage>` first"); one that is not text or does not parse is damaged, a
/// runtime fault like any damaged output (exit 1, "run `agra <stage>` again"); other faults
/// exit 1.
pub fn read_output<T: serde::de::DeserializeOwned>(path: &Path, stage: &str) -> Result<T> {
    let text = read_text(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            crate::error::UsageError::new(format!("{}: {e}; run `agra {stage}` first", path.display())).into()
        }
        std::io::ErrorKind::InvalidData => anyhow::anyhow!("{} is damaged ({e}); run `agra {stage}` again", path.display()),
        _ => anyhow::anyhow!("reading {}: {e}", path.display()),
    })?;
    serde_json::from_str(&text).with_context(|| format!("{} is damaged; run `agra {stage}` again", path.display()))
}

/// Deletes a file; one already gone is no error (another run, or the user, got there first).
pub fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).with_context(|| format!("removing {}", path.display())),
        _ => Ok(()),
    }
}

/// Removes the temp files `write_atomic` left in the directories when a process died between
/// creating one and renaming it (kill -9, a lost node): hidden, they would pile up unseen. Only
/// for directories whose writers the caller's lock excludes, as another writer's temp file may
/// be about to be renamed.
pub fn remove_stale_temps<P: AsRef<Path>>(dirs: impl IntoIterator<Item = P>) -> Result<()> {
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir.as_ref()) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let temp = name.to_str().is_some_and(is_temp_name);
            if temp && entry.file_type().is_ok_and(|t| t.is_file()) {
                remove_if_present(&entry.path())?;
            }
        }
    }
    Ok(())
}

/// f32 values as the little-endian bytes safetensors and .npy files hold.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The inverse of `f32_bytes` (a trailing partial value is dropped).
pub fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// Hex SHA-256, used for content hashes of checkpoints and exports.
pub fn sha256_hex(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reading_refuses_what_is_not_a_regular_file_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("run.json");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(super::read(&fifo).unwrap_err().to_string(), "not a regular file");
        assert!(super::read(dir.path()).is_err(), "a directory");
        let file = dir.path().join("f");
        std::fs::write(&file, b"abc").unwrap();
        assert_eq!(super::read_text(&file).unwrap(), "abc");
    }

    /// Outputs get the permissions any file the user makes gets, not tempfile's 0600.
    #[test]
    fn atomic_writes_follow_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.npy");
        super::write_atomic(&path, b"x").unwrap();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find_map(|l| l.strip_prefix("Umask:")).unwrap();
        let mask = u32::from_str_radix(line.trim(), 8).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o666 & !mask);
    }

    /// Only what `write_atomic` names its temp files goes: not outputs, other hidden files or
    /// folders; a folder that does not exist is no error.
    #[test]
    fn stale_temp_files_go_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let keep = ["epoch-00003.safetensors", ".hidden", "a.tmp.npy", "metrics.jsonl", ".notes.tmp.txt", ".notes.draft1.tmp.md", ".a.agra.toolong.tmp.x"];
        keep.iter().for_each(|n| std::fs::write(dir.path().join(n), b"x").unwrap());
        std::fs::create_dir(dir.path().join(".d.x1.tmp.dir")).unwrap();
        // What write_atomic leaves when killed between creating and renaming.
        let temp = dir.path().join(".epoch-00004.agra.Ab3xYz.tmp.safetensors");
        std::fs::write(&temp, b"partial").unwrap();
        let mut written = Vec::new();
        for name in ["run.json", "config.toml", "noext"] {
            let (_, path) = super::temp_file(dir.path(), name).unwrap().keep().unwrap();
            assert!(super::is_temp_name(path.file_name().unwrap().to_str().unwrap()), "{}", path.display());
            written.push(path);
        }
        super::remove_stale_temps([dir.path().to_path_buf(), dir.path().join("missing")]).unwrap();
        assert!(written.iter().all(|p| !p.exists()));
        assert!(!temp.exists());
        assert!(keep.iter().all(|n| dir.path().join(n).exists()) && dir.path().join(".d.x1.tmp.dir").exists());
    }
}
