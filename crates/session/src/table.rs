//! The per-project table every backend keeps: VFS project root → staging subdirectory,
//! sync manifest ([`SyncState`]) and whatever the backend tracks per project.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use devshell_vm_sync::{SyncProgress, SyncState, VmSyncError};
use devshell_vm_vfs::Vfs;

use crate::SessionError;
use crate::root::{project_root, relative_to};

/// A progress callback shared by every push and pull of a session: the same type for
/// every backend, so a front end passes one value to whichever backend it runs.
pub type SyncObserver = Arc<dyn Fn(&SyncProgress) + Send + Sync>;

/// One synced project root of a session.
pub struct Project<X> {
    vfs_root: String,
    /// The sync manifest of the project's staging subdirectory.
    pub state: SyncState,
    /// What the backend tracks per project (a change watch, the generation the peer
    /// acknowledged, ...).
    pub extra: X,
}

impl<X> Project<X> {
    /// Canonical VFS path of the project root.
    #[must_use]
    pub fn vfs_root(&self) -> &str {
        &self.vfs_root
    }

    /// Pushes what changed in the VFS since the last sync into the project's staging
    /// directory ([`devshell_vm_sync::push_incremental`]; full the first time).
    ///
    /// Every push comes before a tool may run in the staging directory, so it first
    /// reads the file contents pulled without reading ([`devshell_vm_vfs::lazy`]) that
    /// a clone of `vfs` also holds ([`Vfs::materialize_shared_lazy`]): the tool may
    /// rewrite those files in place, and the clone keeps the bytes it was given. Costs
    /// one lookup per lazy file, not a walk of the tree.
    ///
    /// # Errors
    /// [`SessionError::Push`] naming the project root.
    pub fn push(&mut self, vfs: &Vfs) -> Result<devshell_vm_sync::SyncReport, SessionError> {
        vfs.materialize_shared_lazy();
        devshell_vm_sync::push_incremental(vfs, &self.vfs_root, &mut self.state).map_err(|source| {
            SessionError::Push {
                vfs_path: self.vfs_root.clone(),
                source: Box::new(source),
            }
        })
    }

    /// The project's staging directory on the host (the leaf of its VFS root).
    ///
    /// # Errors
    /// As [`SyncState::leaf_dir`].
    pub fn leaf_dir(&self) -> Result<PathBuf, VmSyncError> {
        self.state.leaf_dir(&self.vfs_root)
    }
}

impl<X> std::fmt::Debug for Project<X> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Project")
            .field("vfs_root", &self.vfs_root)
            .finish_non_exhaustive()
    }
}

/// Where a tool run from some VFS cwd goes: the index of its project in the table and
/// the cwd relative to the project root (`""` for the root itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// Index into the table ([`ProjectTable::get_mut`]).
    pub index: usize,
    /// The cwd below the project root, `/`-separated, without a leading `/`.
    pub relative_cwd: String,
}

/// The projects of one session, with the settings every new project inherits (the
/// progress observer and the pull excludes).
pub struct ProjectTable<X> {
    projects: Vec<Project<X>>,
    observer: Option<SyncObserver>,
    excludes: Vec<String>,
    max_workspace_bytes: Option<u64>,
}

impl<X> Default for ProjectTable<X> {
    fn default() -> Self {
        Self {
            projects: Vec::new(),
            observer: None,
            excludes: Vec::new(),
            max_workspace_bytes: None,
        }
    }
}

impl<X> std::fmt::Debug for ProjectTable<X> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectTable")
            .field("roots", &self.roots().collect::<Vec<_>>())
            .field("excludes", &self.excludes)
            .finish_non_exhaustive()
    }
}

impl<X> ProjectTable<X> {
    /// An empty table.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty table whose pulls are bounded by `max_workspace_bytes`
    /// ([`Self::set_max_workspace_bytes`]; `None`: the sync engine's default).
    #[must_use]
    pub fn with_max_workspace_bytes(max_workspace_bytes: Option<u64>) -> Self {
        let mut table = Self::default();
        table.set_max_workspace_bytes(max_workspace_bytes);
        table
    }

    /// Installs a progress callback for every push and pull, also of projects synced
    /// already.
    pub fn set_observer(&mut self, observer: SyncObserver) {
        for project in &mut self.projects {
            project.state.set_observer(forwarding(&observer));
        }
        self.observer = Some(observer);
    }

    /// Paths (globs relative to the project root) that pulls leave out of the VFS, for
    /// every project, present and future.
    ///
    /// # Errors
    /// [`SessionError::Exclude`] when a pattern is invalid; nothing changes then.
    pub fn set_excludes(&mut self, globs: &[&str]) -> Result<(), SessionError> {
        // Validate on a throwaway state first so a bad pattern changes nothing.
        SyncState::new("/")
            .set_excludes(globs)
            .map_err(|source| SessionError::Exclude {
                source: Box::new(source),
            })?;
        for project in &mut self.projects {
            project
                .state
                .set_excludes(globs)
                .map_err(|source| SessionError::Exclude {
                    source: Box::new(source),
                })?;
        }
        self.excludes = globs.iter().map(|g| (*g).to_owned()).collect();
        Ok(())
    }

    /// The workspace size budget of every pull, present projects and future ones
    /// (`VmConfig::workspace_max_bytes`, from `DEVSHELL_VM_WORKSPACE_MAX_BYTES`; `None`
    /// keeps the sync engine's default, `devshell_vm_sync::DEFAULT_MAX_WORKSPACE_BYTES`).
    /// A pull that would pass it fails before reading past it, with the VFS unchanged.
    pub fn set_max_workspace_bytes(&mut self, bytes: Option<u64>) {
        self.max_workspace_bytes = bytes;
        let bytes = bytes.unwrap_or(devshell_vm_sync::DEFAULT_MAX_WORKSPACE_BYTES);
        for project in &mut self.projects {
            project.state.set_max_workspace_bytes(bytes);
        }
    }

    /// The pull excludes in force.
    #[must_use]
    pub fn excludes(&self) -> &[String] {
        &self.excludes
    }

    /// The project of a tool run from `vfs_cwd` (cargo's project-root rule,
    /// [`crate::project_root`]), created on first use: `staging` gives the session's
    /// staging directory (created by the backend when needed), the project gets the
    /// subdirectory named after its index there, created with mode `0700`, and `extra`
    /// its per-project state.
    ///
    /// # Errors
    /// [`SessionError::Cwd`], [`SessionError::ProjectDir`], or the backend's own error
    /// from `staging`.
    pub fn project_for<E: From<SessionError>>(
        &mut self,
        vfs: &Vfs,
        vfs_cwd: &str,
        staging: impl FnOnce() -> Result<PathBuf, E>,
        extra: impl FnOnce() -> X,
    ) -> Result<Located, E> {
        let (root, relative_cwd) = locate(vfs, vfs_cwd)?;
        if let Some(index) = self.projects.iter().position(|p| p.vfs_root == root) {
            return Ok(Located {
                index,
                relative_cwd,
            });
        }
        // One subdirectory per project root: two roots with the same last segment
        // (`/a/app`, `/b/app`) never share a leaf.
        let sub = staging()?.join(self.projects.len().to_string());
        make_private_dir(&sub)?;
        let mut state = SyncState::new(sub);
        if !self.excludes.is_empty() {
            let globs: Vec<&str> = self.excludes.iter().map(String::as_str).collect();
            state
                .set_excludes(&globs)
                .map_err(|source| SessionError::Exclude {
                    source: Box::new(source),
                })?;
        }
        if let Some(observer) = &self.observer {
            state.set_observer(forwarding(observer));
        }
        if let Some(bytes) = self.max_workspace_bytes {
            state.set_max_workspace_bytes(bytes);
        }
        self.projects.push(Project {
            vfs_root: root,
            state,
            extra: extra(),
        });
        Ok(Located {
            index: self.projects.len() - 1,
            relative_cwd,
        })
    }

    /// The project at `index` (from [`Self::project_for`]).
    ///
    /// # Panics
    /// When `index` did not come from this table (a programming error).
    pub fn get_mut(&mut self, index: usize) -> &mut Project<X> {
        &mut self.projects[index]
    }

    /// The project roots, in creation order.
    pub fn roots(&self) -> impl Iterator<Item = &str> {
        self.projects.iter().map(|p| p.vfs_root.as_str())
    }

    /// Every project, for backends that visit them all.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Project<X>> {
        self.projects.iter_mut()
    }

    /// Forgets every project (their staging directories belong to the backend).
    pub fn clear(&mut self) {
        self.projects.clear();
    }

    /// `true` when no project was synced yet.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.projects.is_empty()
    }
}

/// The canonical project root of `vfs_cwd` and the cwd relative to it.
///
/// # Errors
/// [`SessionError::Cwd`] when the cwd is invalid, missing or not a directory.
pub fn locate(vfs: &Vfs, vfs_cwd: &str) -> Result<(String, String), SessionError> {
    let cwd_error = |source: VmSyncError| SessionError::Cwd {
        cwd: vfs_cwd.to_owned(),
        source: Box::new(source),
    };
    let cwd = vfs
        .normalize(vfs_cwd)
        .map_err(|e| cwd_error(VmSyncError::Vfs(e)))?;
    let root = project_root(vfs, &cwd).map_err(cwd_error)?;
    let relative = relative_to(&root, &cwd);
    Ok((root, relative))
}

/// Mode P (the guest tree is the source of truth and the VFS may not hold it): the
/// canonical cwd and its project root when the VFS knows the cwd as a directory, else
/// the cwd itself as the root. Returns `(root, cwd)`.
///
/// # Errors
/// [`SessionError::Cwd`] when the cwd is not a valid path.
pub fn locate_guest_primary(vfs: &Vfs, vfs_cwd: &str) -> Result<(String, String), SessionError> {
    let cwd = vfs.normalize(vfs_cwd).map_err(|e| SessionError::Cwd {
        cwd: vfs_cwd.to_owned(),
        source: Box::new(VmSyncError::Vfs(e)),
    })?;
    let root = match vfs.stat(&cwd) {
        Ok(meta) if meta.kind == devshell_vm_vfs::NodeKind::Dir => project_root(vfs, &cwd)
            .map_err(|source| SessionError::Cwd {
                cwd: vfs_cwd.to_owned(),
                source: Box::new(source),
            })?,
        _ => cwd.clone(),
    };
    Ok((root, cwd))
}

/// Creates `path` (and missing parents) and makes `path` itself `0700`.
///
/// # Errors
/// [`SessionError::ProjectDir`].
pub fn make_private_dir(path: &Path) -> Result<(), SessionError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let err = |source| SessionError::ProjectDir {
        path: path.to_path_buf(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(err)
}

/// A per-state observer that forwards to the session's shared one.
fn forwarding(observer: &SyncObserver) -> Box<dyn FnMut(&SyncProgress) + Send> {
    let observer = Arc::clone(observer);
    Box::new(move |progress| observer(progress))
}
