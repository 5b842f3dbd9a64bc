//! Local storage: `storage.root` plus `storage.paths` templates.
//!
//! The root is opened once as a capability ([`cap_std::fs::Dir`]); every
//! removal is resolved beneath it by the kernel (`openat2` with
//! `RESOLVE_BENEATH` where available), so neither a `..` nor a symlink can
//! lead a deletion outside the root. A symlink that *is* one of the
//! templated paths is removed as a link; its target is never touched.

use std::io;

use cap_std::ambient_authority;
use cap_std::fs::Dir;

use super::{DeleteError, Outcome};
use crate::config::StorageConfig;
use crate::video_id::VideoId;

/// One entry of `storage.paths`, split once at start-up.
#[derive(Debug, Clone)]
struct Template {
    /// Text around `{id}` placeholders, e.g. `["thumbs/", ".jpg"]`.
    pieces: Vec<String>,
    /// A trailing `/`: the path is a directory, removed with its contents.
    dir: bool,
}

impl Template {
    fn parse(template: &str) -> Template {
        let dir = template.ends_with('/');
        let body = template.trim_end_matches('/');
        Template {
            pieces: body.split("{id}").map(str::to_owned).collect(),
            dir,
        }
    }

    fn render(&self, id: &VideoId) -> String {
        self.pieces.join(id.as_str())
    }
}

/// Deletes the files of a video under one root directory.
#[derive(Debug)]
pub struct LocalStorage {
    root: Dir,
    templates: Vec<Template>,
}

impl LocalStorage {
    /// Opens (creating if needed) the root. Templates were validated with the
    /// configuration.
    pub fn open(config: &StorageConfig) -> io::Result<LocalStorage> {
        std::fs::create_dir_all(&config.root)?;
        let root = Dir::open_ambient_dir(&config.root, ambient_authority())?;
        Ok(LocalStorage {
            root,
            templates: config.paths.iter().map(|t| Template::parse(t)).collect(),
        })
    }

    /// Removes every templated path of `id`. Paths that do not exist count as
    /// deleted. On error the other paths are still attempted, and the first
    /// error is returned: the request is retried and already-removed paths
    /// are then simply missing.
    pub fn delete(&self, id: &VideoId) -> Result<Outcome, DeleteError> {
        let mut outcome = Outcome::Missing;
        let mut first_error = None;
        for template in &self.templates {
            let path = template.render(id);
            let result = if template.dir {
                self.root.remove_dir_all(&path)
            } else {
                self.root.remove_file(&path)
            };
            match result {
                Ok(()) => outcome = Outcome::Deleted,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    first_error.get_or_insert(DeleteError {
                        path,
                        reason: describe(&e, template.dir),
                    });
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(outcome),
        }
    }
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
