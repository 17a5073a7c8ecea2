//! Finds the prebuilt libduckdb that `scripts/duckdb-lib.sh` fetches, so a plain `cargo build`
//! links against it, and puts its directory in the rpath so binaries run without
//! LD_LIBRARY_PATH. `--features bundled` compiles DuckDB instead and needs none of this.

use std::path::PathBuf;

/// Must match DUCKDB_VERSION in scripts/duckdb-lib.sh and the duckdb crate (1.10506 = 1.5.6).
const DUCKDB_VERSION: &str = "1.5.6";

/// The commit being built, for `tierd_build_info{revision}`: `TIERD_GIT_REVISION` when set (a
/// container build without `.git`), else `git rev-parse`, else "unknown".
fn git_revision() -> String {
    println!("cargo:rerun-if-env-changed=TIERD_GIT_REVISION");
    if let Ok(r) = std::env::var("TIERD_GIT_REVISION") {
        if !r.trim().is_empty() {
            return r.trim().to_owned();
        }
    }
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
    };
    let Some(dir) = git(&["rev-parse", "--git-dir"]) else {
        return "unknown".into();
    };
    // A new commit or checkout changes one of these.
    for f in ["HEAD", "packed-refs"] {
        println!("cargo:rerun-if-changed={dir}/{f}");
    }
    if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
        println!("cargo:rerun-if-changed={dir}/{head}");
    }
    git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into())
}

fn main() {
    // For the labels of tierd_build_info.
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=TIERD_RUSTC_VERSION={version}");
    println!("cargo:rustc-env=TIERD_GIT_REVISION={}", git_revision());
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    println!("cargo:rerun-if-env-changed=TIERD_DUCKDB_DIR");
    // Without the `duckdb` feature nothing links DuckDB.
    if std::env::var_os("CARGO_FEATURE_DUCKDB").is_none() {
        println!("cargo:rustc-env=TIERD_DUCKDB_VERSION=none");
        return;
    }
    println!("cargo:rustc-env=TIERD_DUCKDB_VERSION={DUCKDB_VERSION}");
    if std::env::var_os("CARGO_FEATURE_BUNDLED").is_some() {
        return;
    }
    let unix = std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("windows");
    let dir = match std::env::var("DUCKDB_LIB_DIR") {
        Ok(dir) => Some(PathBuf::from(dir)),
        Err(_) => {
            let base = std::env::var("TIERD_DUCKDB_DIR")
                .unwrap_or_else(|_| "/var/tmp/tierd-duckdb".into());
            let dir = PathBuf::from(base).join(DUCKDB_VERSION);
            let lib = dir.join("libduckdb.so");
            println!("cargo:rerun-if-changed={}", lib.display());
            if lib.is_file() {
                println!("cargo:rustc-link-search=native={}", dir.display());
                Some(dir)
            } else {
                println!(
                    "cargo:warning=no prebuilt DuckDB at {}: run scripts/duckdb-lib.sh first (or build with --features bundled); linking falls back to a system libduckdb",
                    lib.display()
                );
                None
            }
        }
    };
    if let (Some(dir), true) = (dir, unix) {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    }
}
