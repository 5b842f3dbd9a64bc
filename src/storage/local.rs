//! Local storage: `storage.root` plus `storage.paths` templates.
//!
//! Safety, in one place:
//! - The root is opened once as a capability ([`cap_std::fs::Dir`]); every
//!   path is resolved beneath it by the kernel (`openat2` with
//!   `RESOLVE_BENEATH`), so neither a `..` nor a symlink leads a deletion
//!   outside it. A symlink that *is* a templated path is removed as a link;
//!   its target is never touched.
//! - The root is the directory the configured path names *now*: before each
//!   batch, [`LocalStorage::check`] compares the device and inode of the path
//!   with those of the open directory. A file system mounted on the path
//!   after start-up, or the directory renamed and another made in its place,
//!   makes every batch fail as [`Unavailable`] (nothing deleted, nothing
//!   counted missing, no attempt used) until the path names the opened
//!   directory again.
//! - With `storage.marker`, a file of that name must exist in the root: an
//!   empty mount point or a fresh directory deletes nothing. When the path
//!   comes to name another directory that holds the marker (the shared
//!   mount arrived after the service started), that directory becomes the
//!   root: the marker is the operator's word that it is the video root.
//! - A directory template (`hls/{id}/`) is removed recursively on one file
//!   system, like `rm --one-file-system`, stricter: a mount point anywhere
//!   in it, bind mounts included, is never entered (`RESOLVE_NO_XDEV`), and
//!   the id fails with a clear error instead.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::{
    DeleteError, Erased, OpenError, Target, TargetHealth, TargetResult, Unavailable, Video,
};
use crate::config::StorageConfig;
use crate::paths::{self, PathSpec, Template};

/// The root directory as opened, and who it is.
#[derive(Debug)]
struct OpenedRoot {
    dir: Dir,
    /// Device and inode of `dir`: what the configured path must still name.
    identity: (u64, u64),
}

impl OpenedRoot {
    fn open(path: &Path) -> io::Result<OpenedRoot> {
        let dir = Dir::open_ambient_dir(path, ambient_authority())?;
        let stat = rustix::fs::fstat(&dir)?;
        Ok(OpenedRoot {
            dir,
            identity: (stat.st_dev, stat.st_ino),
        })
    }
}

/// Deletes the files of videos under one root directory.
#[derive(Debug)]
pub(crate) struct LocalStorage {
    /// `storage.root` as configured, for the identity check and messages.
    path: PathBuf,
    /// Replaced only when the path comes to name another directory holding
    /// the marker; read by every batch.
    root: RwLock<OpenedRoot>,
    marker: Option<String>,
    templates: Vec<Template>,
    /// The target's name, for its health.
    name: String,
}

impl LocalStorage {
    /// Opens (creating if needed) the root. Templates were validated with the
    /// configuration.
    pub(crate) fn open(config: &StorageConfig) -> Result<LocalStorage, OpenError> {
        let path = &config.root;
        let failed = |reason: String| OpenError {
            key: "root",
            reason,
            refused: false,
        };
        let io_failed = |e: io::Error| failed(format!("storage.root {}: {e}", path.display()));
        match std::fs::metadata(path) {
            Ok(meta) if !meta.is_dir() => {
                return Err(failed(format!(
                    "storage.root is not a directory: {}",
                    path.display()
                )))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::create_dir_all(path).map_err(io_failed)?
            }
            Err(e) => return Err(io_failed(e)),
        }
        if std::fs::canonicalize(path).is_ok_and(|p| p == Path::new("/")) {
            return Err(failed(
                "storage.root must not be the file system root".into(),
            ));
        }
        let root = OpenedRoot::open(path).map_err(io_failed)?;
        Ok(LocalStorage {
            path: path.clone(),
            root: RwLock::new(root),
            marker: config.marker.clone(),
            templates: paths::parse_all(&config.paths),
            name: config.name().to_owned(),
        })
    }

    /// Removes every path of `video` (its templates, then the paths its
    /// request named) under `root`. Paths that do not exist count as
    /// missing. On error the other paths are still attempted, and the first
    /// error is returned: the request is retried and already-removed paths
    /// are then simply missing.
    fn delete_one(&self, root: &Dir, video: &Video<'_>) -> Result<Erased, DeleteError> {
        let mut erased = Erased::default();
        let mut first_error = None;
        for PathSpec { path, dir } in paths::video_paths(&self.templates, video.id, video.paths) {
            let result = if dir {
                remove_dir_path(root, &path)
            } else {
                remove_file_path(root, &path).map(|found| found.then_some(1))
            };
            match result {
                Ok(Some(files)) => {
                    erased.deleted += 1;
                    erased.objects += files;
                }
                Ok(None) => erased.missing += 1,
                Err(e) => {
                    first_error.get_or_insert(DeleteError {
                        reason: describe(&e, dir),
                        path,
                    });
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(erased),
        }
    }

    /// The path names the opened directory, or (with a marker) another
    /// directory holding the marker, which then becomes the root.
    fn check_identity(&self) -> Result<(), Unavailable> {
        let unavailable = |what: String| {
            Unavailable(format!(
                "storage.root {} {what}; nothing is deleted until it does",
                self.path.display()
            ))
        };
        let now = std::fs::metadata(&self.path).map_err(|e| {
            unavailable(format!(
                "cannot be read ({e}), so it may not name the video directory"
            ))
        })?;
        let opened = self.root.read().unwrap_or_else(|e| e.into_inner()).identity;
        if (now.dev(), now.ino()) == opened {
            return Ok(());
        }
        if let Some(marker) = &self.marker {
            if let Ok(candidate) = OpenedRoot::open(&self.path) {
                if candidate.dir.symlink_metadata(marker).is_ok() {
                    log::warn!(
                        "storage.root {} now names another directory, which holds the marker {marker}: deleting there from now on",
                        self.path.display()
                    );
                    *self.root.write().unwrap_or_else(|e| e.into_inner()) = candidate;
                    return Ok(());
                }
            }
        }
        Err(unavailable(
            "no longer names the directory opened at start-up (a file system was mounted on it, \
             or it was renamed and another made in its place)"
                .into(),
        ))
    }
}

impl Target for LocalStorage {
    fn check(&self) -> Result<(), Unavailable> {
        self.check_identity()?;
        if let Some(marker) = &self.marker {
            let root = self.root.read().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = root.dir.symlink_metadata(marker) {
                return Err(Unavailable(format!(
                    "storage.marker {marker} is not in storage.root {} ({e}); nothing is deleted until it is",
                    self.path.display()
                )));
            }
        }
        Ok(())
    }

    fn delete_batch(&self, videos: &[Video<'_>]) -> Result<TargetResult, Unavailable> {
        self.check()?;
        let root = self.root.read().unwrap_or_else(|e| e.into_inner());
        Ok(videos
            .iter()
            .map(|video| self.delete_one(&root.dir, video))
            .collect())
    }

    fn describe(&self) -> String {
        format!("local directory {}", self.path.display())
    }

    fn health(&self) -> TargetHealth {
        let checked = self.check();
        TargetHealth {
            name: self.name.clone(),
            kind: "local",
            ready: checked.is_ok(),
            error: checked.err().map(|e| e.0),
            versioning: None,
            versions: None,
        }
    }
}

/// Removes the file (or symlink) at `rel`. `Ok(false)`: nothing was there.
fn remove_file_path(root: &Dir, rel: &str) -> io::Result<bool> {
    match root.remove_file(rel) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes the directory at `rel` with everything in it, never entering a
/// mount point. A symlink there is removed as a link. `Ok(None)`: nothing
/// was there; `Ok(Some(n))`: removed, with `n` files (or links) in it.
fn remove_dir_path(root: &Dir, rel: &str) -> io::Result<Option<u32>> {
    let (parent, name) = match rel.rsplit_once('/') {
        Some((parent, name)) => match root.open_dir(parent) {
            Ok(dir) => (dir, name),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        },
        None => (root.try_clone()?, rel),
    };
    let meta = match parent.symlink_metadata(name) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if meta.is_symlink() {
        parent.remove_file(name)?;
        return Ok(Some(1));
    }
    if !meta.is_dir() {
        return Err(io::Error::from(io::ErrorKind::NotADirectory));
    }
    remove_tree(&parent, name).map(Some)
}

/// Removes `name` in `parent` and everything under it, depth first with an
/// explicit stack (a deep tree cannot overflow the thread's stack).
/// Entries are unlinked as they are read; each directory is removed once
/// it has been read to the end. Returns the files (and links) removed.
fn remove_tree(parent: &Dir, name: &str) -> io::Result<u32> {
    let mut files = 0;
    // (the directory being emptied, its name in the level above, its path
    // relative to the templated directory for messages)
    let mut stack: Vec<(rustix::fs::Dir, std::ffi::CString, String)> = Vec::new();
    let first = open_subdir(parent, name, name)?;
    stack.push((
        rustix::fs::Dir::new(first)?,
        std::ffi::CString::new(name).map_err(io::Error::other)?,
        name.to_owned(),
    ));
    while let Some((dir, _, path)) = stack.last_mut() {
        match dir.next() {
            Some(entry) => {
                let entry = entry?;
                let child = entry.file_name();
                if child == c"." || child == c".." {
                    continue;
                }
                let fd = dir.fd()?;
                let is_dir = match entry.file_type() {
                    FileType::Directory => true,
                    FileType::Unknown => {
                        let stat = rustix::fs::statat(fd, child, AtFlags::SYMLINK_NOFOLLOW)?;
                        FileType::from_raw_mode(stat.st_mode) == FileType::Directory
                    }
                    _ => false,
                };
                let child_path = format!("{path}/{}", child.to_string_lossy());
                if is_dir {
                    let sub = open_subdir(fd, child, &child_path)?;
                    let child = child.to_owned();
                    stack.push((rustix::fs::Dir::new(sub)?, child, child_path));
                } else {
                    rustix::fs::unlinkat(fd, child, AtFlags::empty())
                        .map_err(|e| at(&child_path, e.into()))?;
                    files += 1;
                }
            }
            None => {
                let (_, done, done_path) = stack.pop().expect("the loop holds an entry");
                let result = match stack.last() {
                    Some((above, _, _)) => {
                        rustix::fs::unlinkat(above.fd()?, done.as_c_str(), AtFlags::REMOVEDIR)
                    }
                    None => rustix::fs::unlinkat(parent, done.as_c_str(), AtFlags::REMOVEDIR),
                };
                result.map_err(|e| at(&done_path, e.into()))?;
            }
        }
    }
    Ok(files)
}

/// Opens the directory `name` in `parent` for removal: never through a
/// symlink, never into another mount (a bind mount of the same file system
/// included). `path` names it in errors.
fn open_subdir<P: rustix::path::Arg + Copy>(
    parent: impl AsFd,
    name: P,
    path: &str,
) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_XDEV;
    match rustix::fs::openat2(&parent, name, flags, Mode::empty(), resolve) {
        Ok(fd) => Ok(fd),
        Err(Errno::XDEV) => Err(io::Error::other(format!(
            "{path} is a mount point; not crossing into another file system"
        ))),
        Err(Errno::NOSYS) => {
            // Kernels before 5.6 have no openat2: open without following a
            // symlink and compare devices (a bind mount of the same file
            // system is then not detected).
            let fd = rustix::fs::openat(&parent, name, flags, Mode::empty())?;
            if rustix::fs::fstat(&fd)?.st_dev != rustix::fs::fstat(&parent)?.st_dev {
                return Err(io::Error::other(format!(
                    "{path} is a mount point; not crossing into another file system"
                )));
            }
            Ok(fd)
        }
        Err(e) => Err(at(path, e.into())),
    }
}

/// `e`, prefixed by the path inside the templated directory it is about.
fn at(path: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{path}: {e}"))
}

/// The OS error, with a hint for the cases an operator will meet.
fn describe(e: &io::Error, dir: bool) -> String {
    match e.kind() {
        io::ErrorKind::IsADirectory if !dir => {
            format!("{e} (the template names a file, but a directory is there)")
        }
        io::ErrorKind::NotADirectory if dir => {
            format!("{e} (the template names a directory, but something else is there)")
        }
        _ => e.to_string(),
    }
}
