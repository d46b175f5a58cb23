//! Config and secrets files the monitor owns: written atomically (a reader — charon, pluto,
//! an admin — sees the old file or the new one, never half of one), with an explicit mode
//! (0600 for secrets, set at creation so there is no window where the file is readable), and
//! only when the content or mode changes, so an unchanged pass touches nothing on disk.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use thiserror::Error;

#[derive(Debug, Error)]
#[error("cannot write {path}: {source}")]
pub struct FileError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Mode of files that hold secrets.
pub const SECRET_MODE: u32 = 0o600;
/// Mode of ordinary config files.
pub const CONFIG_MODE: u32 = 0o644;

/// Writes `content` to `path` with `mode` unless it already holds exactly that; returns
/// whether the file changed. Parent directories are created (0755).
pub fn write_if_changed(path: &Path, content: &[u8], mode: u32) -> Result<bool, FileError> {
    let err = |source| FileError {
        path: path.to_owned(),
        source,
    };
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o7777 == mode
        && meta.len() == content.len() as u64
        && fs::read(path).map_err(err)? == content
    {
        return Ok(false);
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(err)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    // A leftover from a crashed run would make create_new fail.
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have cleared bits of `mode`; set it exactly.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(content)?;
        // The content is on disk before the name points at it, so after a crash the path
        // holds the old file or the whole new one, never an empty or partial one. The
        // directory is not synced: that would only make the rename itself durable, and a
        // lost rename leaves the old file, which the next start compares and writes again
        // (every file here is derived from OVSDB). One fsync per write, not two.
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)?;
    Ok(true)
}

/// Removes `path`; a file that is already gone is not an error.
pub fn remove(path: &Path) -> Result<bool, FileError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(source) => Err(FileError {
            path: path.to_owned(),
            source,
        }),
    }
}

/// SHA-256 of `bytes`: how backends tell that a file, a rendered config or a credential
/// changed without keeping its text (secrets files hold PSKs).
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// SHA-256 of the file at `path`, `None` when it cannot be read.
pub fn sha256_of(path: &Path) -> Option<[u8; 32]> {
    fs::read(path).ok().map(|b| sha256(&b))
}

/// A warning when the private key file at `path` is readable by group or others. The key is
/// still used (the IKE daemons accept it); the warning names the file and its mode, never
/// anything from its content. `None` when the mode is private or the file cannot be read.
pub fn exposed_key(path: &Path) -> Option<String> {
    let mode = fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o044 != 0).then(|| {
        format!(
            "private key {} is readable by group or others (mode {mode:04o}); make it 0600",
            path.display()
        )
    })
}

/// `root` + absolute `path` (`--root-prefix`): `/x` + `/etc/ipsec.conf` = `/x/etc/ipsec.conf`.
pub fn under_root(root: &Path, path: &Path) -> PathBuf {
    if root.as_os_str().is_empty() {
        return path.to_owned();
    }
    root.join(path.strip_prefix("/").unwrap_or(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_readable_by_group_or_others_is_named_with_its_mode_only() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.pem");
        fs::write(&key, "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n").unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(exposed_key(&key), None);
        fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).unwrap();
        let w = exposed_key(&key).unwrap();
        assert_eq!(
            w,
            format!(
                "private key {} is readable by group or others (mode 0640); make it 0600",
                key.display()
            )
        );
        assert_eq!(exposed_key(&dir.path().join("missing")), None);
    }

    #[test]
    fn writes_once_then_only_on_change() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("etc/ipsec.secrets");
        assert!(write_if_changed(&p, b"a", SECRET_MODE).unwrap());
        let inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&p).unwrap());
        assert!(!write_if_changed(&p, b"a", SECRET_MODE).unwrap());
        assert_eq!(
            std::os::unix::fs::MetadataExt::ino(&fs::metadata(&p).unwrap()),
            inode
        );
        assert!(write_if_changed(&p, b"b", SECRET_MODE).unwrap());
        assert_eq!(fs::read(&p).unwrap(), b"b");
    }

    #[test]
    fn secrets_are_0600_and_a_mode_change_rewrites() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s");
        fs::write(&p, b"x").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(write_if_changed(&p, b"x", SECRET_MODE).unwrap());
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::read_dir(d.path()).unwrap().count(),
            1,
            "temporary file left behind"
        );
    }

    #[test]
    fn remove_is_idempotent() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        fs::write(&p, b"x").unwrap();
        assert!(remove(&p).unwrap());
        assert!(!remove(&p).unwrap());
    }

    #[test]
    fn root_prefix_joins_absolute_paths() {
        assert_eq!(
            under_root(Path::new("/sandbox"), Path::new("/etc/ipsec.conf")),
            PathBuf::from("/sandbox/etc/ipsec.conf")
        );
        assert_eq!(
            under_root(Path::new(""), Path::new("/etc/x")),
            PathBuf::from("/etc/x")
        );
    }
}
