//! Links libtorch so the binary runs without LD_LIBRARY_PATH and sees CUDA where there is one.
//!
//! tch links with `--as-needed`, and since no symbol of `libtorch_cuda.so` is referenced
//! directly, the linker drops it: the program then never registers the CUDA backend. We link it
//! again under `--no-as-needed` and set an rpath to libtorch's folder.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    record_versions();
    let Some(root) = std::env::var_os("LIBTORCH").map(PathBuf::from) else {
        println!("cargo:warning=LIBTORCH is not set; run scripts/setup (CUDA will not be linked)");
        return;
    };
    let lib = root.join("lib");
    let lib = lib.canonicalize().unwrap_or(lib);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-L{}", lib.display());
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}

/// The git commit and libtorch version, recorded in each run directory's metadata.
fn record_versions() {
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(commit) = commit {
        println!("cargo:rustc-env=AGRA_GIT_COMMIT={commit}");
    }
    let version = std::env::var_os("LIBTORCH")
        .and_then(|root| std::fs::read_to_string(PathBuf::from(root).join("version.py")).ok())
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("__version__"))?;
            Some(line.split(['\'', '"']).nth(1)?.to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=AGRA_LIBTORCH_VERSION={version}");
    // A commit moves the branch HEAD names, not HEAD itself: watch that ref too (loose, or
    // packed), or every binary built after the first keeps the first one's commit.
    println!("cargo:rerun-if-changed=.git/HEAD");
    let head = std::fs::read_to_string(".git/HEAD").unwrap_or_default();
    let branch = head.strip_prefix("ref: ").map(|b| b.trim().to_string());
    for path in branch.map(|b| format!(".git/{b}")).into_iter().chain([".git/packed-refs".to_string()]) {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
