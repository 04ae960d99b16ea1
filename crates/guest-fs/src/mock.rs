//! [`MockGuestFsOps`]: an in-memory [`GuestFsOps`] for callers' unit tests.

use std::collections::BTreeMap;

use crate::{
    GuestFsError, GuestFsOps, GuestKind, GuestMetadata, check_guest_path, normalize_guest_path,
};

/// One node of the mock tree.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File(Vec<u8>),
}

/// What a lookup found.
enum Probe<'a> {
    Found(&'a Node),
    Missing,
    ParentIsFile,
}

/// In-memory guest tree implementing the full [`GuestFsOps`] contract (it passes
/// the `conformance` suite), for callers' unit tests.
///
/// Holds directories and regular files keyed by normalised guest path; it has no
/// symlinks, so the symlink part of the conformance suite does not apply to it.
/// `rename` is the trait's default, [`crate::rename_by_copy`].
///
/// ```
/// use devshell_vm_guest_fs::{GuestFsOps, MockGuestFsOps};
/// let mut fs = MockGuestFsOps::new("/workspace").unwrap();
/// fs.write_file("/workspace/app/src/main.rs", b"fn main() {}").unwrap();
/// assert_eq!(fs.list_dir("/workspace/app").unwrap(), ["src"]);
/// assert!(fs.read_file("/workspace/../etc/passwd").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockGuestFsOps {
    mount: String,
    nodes: BTreeMap<String, Node>,
    /// When set, every operation on a valid path fails with this transport message.
    unreachable: Option<String>,
}

impl Default for MockGuestFsOps {
    /// An empty tree mounted at `/workspace`.
    fn default() -> Self {
        Self::with_normalised_mount("/workspace".to_owned())
    }
}

impl MockGuestFsOps {
    /// An empty tree whose mount (normalised) exists as an empty directory.
    ///
    /// # Errors
    /// [`GuestFsError::InvalidPath`] when `mount` is empty, contains NUL or is relative.
    pub fn new(mount: &str) -> Result<Self, GuestFsError> {
        Ok(Self::with_normalised_mount(normalize_guest_path(mount)?))
    }

    /// Builds the tree for an already normalised mount.
    fn with_normalised_mount(mount: String) -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert(mount.clone(), Node::Dir);
        Self {
            mount,
            nodes,
            unreachable: None,
        }
    }

    /// Simulates a backend that cannot be reached (VM stopped, sidecar gone): while
    /// `message` is `Some`, every operation on a path that passes the mount check fails
    /// with [`GuestFsError::Transport`] carrying it, and changes nothing; invalid paths
    /// are still refused with [`GuestFsError::InvalidPath`] first, as the contract
    /// requires. `None` makes the backend reachable again with its tree intact.
    ///
    /// ```
    /// use devshell_vm_guest_fs::{GuestFsErrorKind, GuestFsOps, MockGuestFsOps};
    /// let mut fs = MockGuestFsOps::new("/workspace").unwrap();
    /// fs.set_unreachable(Some("sidecar exited"));
    /// assert_eq!(fs.exists("/workspace/x").unwrap_err().kind(), GuestFsErrorKind::Transport);
    /// fs.set_unreachable(None);
    /// assert!(!fs.exists("/workspace/x").unwrap());
    /// ```
    pub fn set_unreachable(&mut self, message: Option<&str>) {
        self.unreachable = message.map(str::to_owned);
    }

    /// Number of files and directories below the mount (the mount not counted).
    #[must_use]
    pub fn len(&self) -> usize {
        self.nodes.len() - 1
    }

    /// `true` when nothing exists below the mount.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Ancestors of `path` strictly between the mount and `path`, outermost first.
    fn ancestors_below_mount(&self, path: &str) -> Vec<String> {
        let rel = if self.mount == "/" {
            path.strip_prefix('/').unwrap_or(path)
        } else {
            path.strip_prefix(self.mount.as_str())
                .and_then(|r| r.strip_prefix('/'))
                .unwrap_or("")
        };
        let mut out = Vec::new();
        let mut current = self.mount.clone();
        let segments: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
        for segment in segments.iter().take(segments.len().saturating_sub(1)) {
            if current != "/" {
                current.push('/');
            }
            current.push_str(segment);
            out.push(current.clone());
        }
        out
    }

    /// Looks `path` (normalised, under the mount) up.
    fn probe(&self, path: &str) -> Probe<'_> {
        for ancestor in self.ancestors_below_mount(path) {
            match self.nodes.get(&ancestor) {
                Some(Node::Dir) => {}
                Some(Node::File(_)) => return Probe::ParentIsFile,
                None => return Probe::Missing,
            }
        }
        self.nodes.get(path).map_or(Probe::Missing, Probe::Found)
    }

    /// Key prefix of the children of directory `dir`.
    fn child_prefix(dir: &str) -> String {
        if dir == "/" {
            "/".to_owned()
        } else {
            format!("{dir}/")
        }
    }

    /// Creates every missing ancestor of `path` as a directory (callers checked that no
    /// ancestor is a file).
    fn create_parents(&mut self, path: &str) {
        for ancestor in self.ancestors_below_mount(path) {
            self.nodes.entry(ancestor).or_insert(Node::Dir);
        }
    }

    /// Normalises and mount-checks `path`, then fails when the backend is unreachable.
    fn check(&self, path: &str) -> Result<String, GuestFsError> {
        let p = check_guest_path(&self.mount, path)?;
        match &self.unreachable {
            Some(message) => Err(GuestFsError::Transport {
                message: format!("{message} (while accessing {p:?})"),
            }),
            None => Ok(p),
        }
    }
}

impl GuestFsOps for MockGuestFsOps {
    fn mount(&self) -> &str {
        &self.mount
    }

    fn list_dir(&mut self, path: &str) -> Result<Vec<String>, GuestFsError> {
        let p = self.check(path)?;
        match self.probe(&p) {
            Probe::Found(Node::Dir) => {
                let prefix = Self::child_prefix(&p);
                Ok(self
                    .nodes
                    .range(prefix.clone()..)
                    .map(|(key, _)| key)
                    .take_while(|key| key.starts_with(prefix.as_str()))
                    .filter_map(|key| {
                        let rest = &key[prefix.len()..];
                        (!rest.is_empty() && !rest.contains('/')).then(|| rest.to_owned())
                    })
                    .collect())
            }
            Probe::Found(Node::File(_)) | Probe::ParentIsFile => {
                Err(GuestFsError::NotADirectory { path: p })
            }
            Probe::Missing => Err(GuestFsError::NotFound { path: p }),
        }
    }

    fn read_file(&mut self, path: &str) -> Result<Vec<u8>, GuestFsError> {
        let p = self.check(path)?;
        match self.probe(&p) {
            Probe::Found(Node::File(data)) => Ok(data.clone()),
            Probe::Found(Node::Dir) => Err(GuestFsError::IsADirectory { path: p }),
            Probe::ParentIsFile => Err(GuestFsError::NotADirectory { path: p }),
            Probe::Missing => Err(GuestFsError::NotFound { path: p }),
        }
    }

    fn write_file(&mut self, path: &str, data: &[u8]) -> Result<(), GuestFsError> {
        let p = self.check(path)?;
        match self.probe(&p) {
            Probe::Found(Node::Dir) => Err(GuestFsError::IsADirectory { path: p }),
            Probe::ParentIsFile => Err(GuestFsError::NotADirectory { path: p }),
            Probe::Found(Node::File(_)) | Probe::Missing => {
                self.create_parents(&p);
                self.nodes.insert(p, Node::File(data.to_vec()));
                Ok(())
            }
        }
    }

    fn mkdir(&mut self, path: &str) -> Result<(), GuestFsError> {
        let p = self.check(path)?;
        match self.probe(&p) {
            Probe::Found(Node::Dir) => Ok(()),
            Probe::Found(Node::File(_)) | Probe::ParentIsFile => {
                Err(GuestFsError::NotADirectory { path: p })
            }
            Probe::Missing => {
                self.create_parents(&p);
                self.nodes.insert(p, Node::Dir);
                Ok(())
            }
        }
    }

    fn remove(&mut self, path: &str) -> Result<(), GuestFsError> {
        let p = self.check(path)?;
        if p == self.mount {
            return Err(GuestFsError::invalid_path(
                path,
                "cannot remove the guest mount root",
            ));
        }
        match self.probe(&p) {
            Probe::Found(_) => {
                let prefix = Self::child_prefix(&p);
                let doomed: Vec<String> = self
                    .nodes
                    .range(prefix.clone()..)
                    .map(|(key, _)| key)
                    .take_while(|key| key.starts_with(prefix.as_str()))
                    .cloned()
                    .collect();
                for key in doomed {
                    self.nodes.remove(&key);
                }
                self.nodes.remove(&p);
                Ok(())
            }
            Probe::ParentIsFile => Err(GuestFsError::NotADirectory { path: p }),
            Probe::Missing => Err(GuestFsError::NotFound { path: p }),
        }
    }

    fn stat(&mut self, path: &str) -> Result<GuestMetadata, GuestFsError> {
        let p = self.check(path)?;
        match self.probe(&p) {
            Probe::Found(Node::Dir) => Ok(GuestMetadata {
                kind: GuestKind::Dir,
                size: 0,
            }),
            Probe::Found(Node::File(data)) => Ok(GuestMetadata {
                kind: GuestKind::File,
                size: data.len() as u64,
            }),
            Probe::ParentIsFile => Err(GuestFsError::NotADirectory { path: p }),
            Probe::Missing => Err(GuestFsError::NotFound { path: p }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GuestFsErrorKind;

    #[test]
    fn default_mount_and_len() {
        let mut fs = MockGuestFsOps::default();
        assert_eq!(fs.mount(), "/workspace");
        assert!(fs.is_empty());
        fs.write_file("/workspace/a/b", b"x").unwrap();
        assert_eq!(fs.len(), 2);
        fs.remove("/workspace/a").unwrap();
        assert!(fs.is_empty());
    }

    #[test]
    fn root_mount_works() {
        let mut fs = MockGuestFsOps::new("/").unwrap();
        fs.write_file("/etc/x", b"1").unwrap();
        fs.mkdir("/.d").unwrap();
        assert_eq!(fs.list_dir("/").unwrap(), [".d", "etc"]);
        assert_eq!(fs.read_file("/etc/../etc/x").unwrap(), b"1");
        assert_eq!(
            fs.remove("/").unwrap_err().kind(),
            GuestFsErrorKind::InvalidPath
        );
        fs.remove("/etc").unwrap();
        assert_eq!(fs.list_dir("/").unwrap(), [".d"]);
    }

    #[test]
    fn mount_is_normalised_and_validated() {
        assert_eq!(MockGuestFsOps::new("/a/./b/").unwrap().mount(), "/a/b");
        for bad in ["", "rel", "/a\0"] {
            assert_eq!(
                MockGuestFsOps::new(bad).unwrap_err().kind(),
                GuestFsErrorKind::InvalidPath
            );
        }
    }

    #[test]
    fn error_wire_codes_round_trip() {
        let p = "/workspace/x";
        for e in [
            GuestFsError::NotFound { path: p.into() },
            GuestFsError::NotADirectory { path: p.into() },
            GuestFsError::IsADirectory { path: p.into() },
            GuestFsError::invalid_path(p, "outside"),
        ] {
            let back = GuestFsError::from_wire(e.wire_code(), p, "outside");
            assert_eq!(back, e);
        }
        let unknown = GuestFsError::from_wire("io_error", p, "disk full");
        assert_eq!(unknown.kind(), GuestFsErrorKind::Internal);
        assert!(unknown.to_string().contains("disk full"));
    }
}
