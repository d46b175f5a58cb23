//! The CAs of the `ca_cert` bundle as charon's stroke reads them. A `ca` section's `cacert=`
//! file yields only its first certificate (checked with charon 5.9), so every member of the
//! bundle gets its own DER file `ovs-ca-<id>.der` in the CA directory and its own
//! `ca ovs-ca-<id>` section. `<id>` follows the member's content ([`BundleCa::id`]), so a
//! changed bundle changes only the sections of the members added or removed, and
//! `ipsec update` adds and deletes exactly those CAs.
//!
//! The members come from the model (`model::Global::ca_bundle`): this backend never reads
//! or judges a bundle itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::StrokeError;
use crate::backend::files::{CONFIG_MODE, write_if_changed};
use crate::model::bundle::BundleCa;

/// The prefix of the CA sections and of their files in the CA directory.
const PREFIX: &str = "ovs-ca-";

/// One CA of the bundle: its section name and its file.
#[derive(Clone, Serialize)]
pub struct CaSection {
    pub name: String,
    pub file: String,
}

/// The sections of `members`, and their files (path → DER) in `ca_dir`.
pub fn sections(
    ca_dir: &Path,
    members: &[BundleCa],
) -> (Vec<CaSection>, BTreeMap<PathBuf, Vec<u8>>) {
    let mut sections = Vec::with_capacity(members.len());
    let mut files = BTreeMap::new();
    for m in members {
        let name = format!("{PREFIX}{}", m.id());
        let path = ca_dir.join(format!("{name}.der"));
        sections.push(CaSection {
            name,
            file: path.display().to_string(),
        });
        files.insert(path, m.der.clone());
    }
    (sections, files)
}

/// Makes `ca_dir` hold exactly `files` of ours: new members are written before
/// `ipsec update` adds their sections; the files of members gone are removed (charon keeps
/// what it loaded until `update` deletes their sections). Other files are left alone.
pub fn write(ca_dir: &Path, files: &BTreeMap<PathBuf, Vec<u8>>) -> Result<(), StrokeError> {
    for (path, der) in files {
        write_if_changed(path, der, CONFIG_MODE)?;
    }
    let Ok(dir) = std::fs::read_dir(ca_dir) else {
        return Ok(());
    };
    for entry in dir.flatten() {
        let path = entry.path();
        let ours = (entry.file_name().to_str())
            .is_some_and(|n| n.starts_with(PREFIX) && n.ends_with(".der"));
        if ours && !files.contains_key(&path) {
            std::fs::remove_file(&path).map_err(|source| StrokeError::Remove {
                path: path.clone(),
                source,
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca(byte: u8) -> BundleCa {
        BundleCa {
            der: vec![byte],
            sha256: [byte; 32],
            subject: format!("CN=ca{byte}"),
        }
    }

    #[test]
    fn a_changed_bundle_changes_only_the_files_of_changed_members() {
        let dir = tempfile::tempdir().unwrap();
        let foreign = dir.path().join("site-ca.der");
        std::fs::write(&foreign, b"theirs").unwrap();
        let (s, files) = sections(dir.path(), &[ca(1), ca(2)]);
        assert_eq!(s[0].name, "ovs-ca-0101010101010101");
        assert_eq!(
            s[1].file,
            dir.path()
                .join("ovs-ca-0202020202020202.der")
                .display()
                .to_string()
        );
        write(dir.path(), &files).unwrap();
        let kept = dir.path().join("ovs-ca-0202020202020202.der");
        let before = std::fs::metadata(&kept).unwrap().modified().unwrap();
        let (_, files) = sections(dir.path(), &[ca(2), ca(3)]);
        write(dir.path(), &files).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "ovs-ca-0202020202020202.der",
                "ovs-ca-0303030303030303.der",
                "site-ca.der"
            ]
        );
        assert_eq!(
            std::fs::metadata(&kept).unwrap().modified().unwrap(),
            before
        );
        assert_eq!(std::fs::read(kept).unwrap(), [2]);
    }
}
