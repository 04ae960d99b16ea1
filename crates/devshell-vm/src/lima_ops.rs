//! [`LimaGuestFsOps`]: the seed's stand-alone [`GuestFsOps`] over a Lima guest.

use devshell_vm_backend_lima::GammaSession;
use devshell_vm_config::VmConfig;
use devshell_vm_guest_fs::{GuestFsError, GuestFsOps, GuestMetadata};

use crate::VmError;

/// Guest file operations on a Lima (γ) instance without a [`crate::SessionHolder`]: owns
/// a [`GammaSession`] and delegates every [`GuestFsOps`] call to it (the seed's
/// `LimaGuestFsOps`). Paths are guest absolute paths under [`GuestFsOps::mount`].
#[derive(Debug)]
pub struct LimaGuestFsOps {
    session: GammaSession,
}

impl LimaGuestFsOps {
    /// Resolves `limactl`, the instance and its workspace mount from `config` (the
    /// workspace parent exactly as [`crate::SessionHolder::try_from_config`] resolves it);
    /// the VM is not started until the first operation needs it.
    ///
    /// # Errors
    /// [`VmError::BackendUnavailable`] without `limactl`; [`VmError::Lima`] for any other
    /// failure of [`GammaSession::new`].
    pub fn new(config: &VmConfig) -> Result<Self, VmError> {
        crate::holder::backends::new_gamma_session(config).map(|session| Self { session })
    }

    /// The Lima session behind the operations.
    #[must_use]
    pub fn session(&self) -> &GammaSession {
        &self.session
    }

    /// The Lima session behind the operations, mutably.
    pub fn session_mut(&mut self) -> &mut GammaSession {
        &mut self.session
    }

    /// Gives the Lima session back.
    #[must_use]
    pub fn into_session(self) -> GammaSession {
        self.session
    }
}

impl GuestFsOps for LimaGuestFsOps {
    fn mount(&self) -> &str {
        GuestFsOps::mount(&self.session)
    }

    fn list_dir(&mut self, path: &str) -> Result<Vec<String>, GuestFsError> {
        GuestFsOps::list_dir(&mut self.session, path)
    }

    fn read_file(&mut self, path: &str) -> Result<Vec<u8>, GuestFsError> {
        GuestFsOps::read_file(&mut self.session, path)
    }

    fn write_file(&mut self, path: &str, data: &[u8]) -> Result<(), GuestFsError> {
        GuestFsOps::write_file(&mut self.session, path, data)
    }

    fn mkdir(&mut self, path: &str) -> Result<(), GuestFsError> {
        GuestFsOps::mkdir(&mut self.session, path)
    }

    fn remove(&mut self, path: &str) -> Result<(), GuestFsError> {
        GuestFsOps::remove(&mut self.session, path)
    }

    fn stat(&mut self, path: &str) -> Result<GuestMetadata, GuestFsError> {
        GuestFsOps::stat(&mut self.session, path)
    }

    fn exists(&mut self, path: &str) -> Result<bool, GuestFsError> {
        GuestFsOps::exists(&mut self.session, path)
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), GuestFsError> {
        GuestFsOps::rename(&mut self.session, from, to)
    }
}
