//! Names the git commit the binary is built from, for `--version`: the environment's
//! `JTL_SIDECAR_COMMIT` when set (a container build, where `.git` is not in the context:
//! `--build-arg JTL_SIDECAR_COMMIT=$(git rev-parse --short HEAD)`), else `git rev-parse`
//! when the source is a git checkout, else nothing.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=JTL_SIDECAR_COMMIT");
    let from_env = std::env::var("JTL_SIDECAR_COMMIT")
        .ok()
        .map(|commit| commit.trim().to_owned())
        .filter(|commit| {
            !commit.is_empty()
                && commit.len() <= 40
                && commit.bytes().all(|b| b.is_ascii_hexdigit())
        });
    let commit = from_env.or_else(|| {
        // Built again when HEAD moves: HEAD itself, the branch it names, packed refs.
        for path in ["HEAD", "packed-refs"] {
            if let Some(path) = git(&["rev-parse", "--git-path", path]) {
                println!("cargo:rerun-if-changed={path}");
            }
        }
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
            && let Some(path) = git(&["rev-parse", "--git-path", &branch])
        {
            println!("cargo:rerun-if-changed={path}");
        }
        git(&["rev-parse", "--short=12", "HEAD"])
    });
    let version = match commit {
        Some(commit) => format!("{} (commit {commit})", env!("CARGO_PKG_VERSION")),
        None => env!("CARGO_PKG_VERSION").to_owned(),
    };
    println!("cargo:rustc-env=JTL_SIDECAR_VERSION={version}");
}
