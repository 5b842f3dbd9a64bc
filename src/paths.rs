//! Path templates (`storage.paths`) and the paths a request names itself
//! (`items[].paths`), parsed and checked in one place for every storage
//! kind, and by the configuration (a leaf: it knows ids, nothing else): `thumbs/{id}.jpg` names one file or object key, `hls/{id}/` (a
//! trailing `/`) a directory removed recursively or a key prefix whose
//! every object is deleted. Both follow the same rules: relative, no `.`,
//! `..` or empty component, no NUL or backslash.

use crate::video_id::VideoId;

/// Most paths one request may name for one id.
pub(crate) const MAX_REQUEST_PATHS: usize = 256;
/// Longest path a request may name, in bytes.
pub(crate) const MAX_REQUEST_PATH_BYTES: usize = 1024;

/// One path of a video on a target, relative to its root or bucket.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct PathSpec {
    /// Without the trailing `/` of a directory.
    pub path: String,
    /// A directory (local) or a prefix (object storage): everything under it.
    pub dir: bool,
}

impl PathSpec {
    /// Parses a path named by a request (`web/3f2a-720.mp4`, `hls/3f2a/`):
    /// the template rules, and no `{`/`}` rule (there is no placeholder),
    /// but no control character either (it would travel in logs and XML),
    /// at most [`MAX_REQUEST_PATH_BYTES`].
    pub(crate) fn parse_request(text: &str) -> Result<PathSpec, String> {
        if text.len() > MAX_REQUEST_PATH_BYTES {
            return Err(format!(
                "at most {MAX_REQUEST_PATH_BYTES} bytes, not {}",
                text.len()
            ));
        }
        if text.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        check_relative(text)?;
        Ok(PathSpec {
            path: text.strip_suffix('/').unwrap_or(text).to_owned(),
            dir: text.ends_with('/'),
        })
    }

    /// As written in a request (and stored): with the trailing `/` of a
    /// directory. Object storage names a refused path by it.
    #[cfg(any(feature = "s3", test))]
    pub(crate) fn to_text(&self) -> String {
        match self.dir {
            true => format!("{}/", self.path),
            false => self.path.clone(),
        }
    }
}

/// The rules shared by templates and request paths: relative, and no
/// `.`, `..` or empty component (`a//b`), no NUL, no backslash.
fn check_relative(text: &str) -> Result<(), &'static str> {
    if text.is_empty() {
        return Err("must not be empty");
    }
    if text.contains(['\0', '\\']) {
        return Err("must not contain NUL or backslash");
    }
    if text.starts_with('/') {
        return Err("must be relative (no leading /)");
    }
    let body = text.strip_suffix('/').unwrap_or(text);
    // One pass over the components: `Path::components` would hide an
    // interior `.`, so split the text itself.
    for component in body.split('/') {
        match component {
            "" => return Err("must not contain empty path components"),
            "." => return Err("must not contain ."),
            ".." => return Err("must not contain .."),
            _ => {}
        }
    }
    Ok(())
}

/// One entry of `storage.paths`, split once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    /// Text around the `{id}` placeholders, e.g. `["thumbs/", ".jpg"]`.
    pieces: Vec<String>,
    /// A trailing `/`: a directory (local) or a prefix (object storage).
    pub dir: bool,
}

impl Template {
    /// Parses and checks `template`. It must name a path inside the root
    /// that depends on the id: relative, no `.`/`..`/empty components, and
    /// containing `{id}` (a template without it would delete the same file
    /// for every request).
    pub(crate) fn parse(template: &str) -> Result<Template, &'static str> {
        if !template.contains("{id}") {
            return Err("must contain {id}");
        }
        let without_id = template.replace("{id}", "");
        if without_id.contains(['{', '}']) {
            return Err("only the placeholder {id} is known");
        }
        if template.starts_with('/') {
            return Err("must be relative to storage.root");
        }
        check_relative(template)?;
        let body = template.strip_suffix('/').unwrap_or(template);
        Ok(Template {
            pieces: body.split("{id}").map(str::to_owned).collect(),
            dir: template.ends_with('/'),
        })
    }

    /// For a directory template whose `{id}` starts a path segment
    /// (`hls/{id}/`, `{id}/`): the text before it (`hls/`, ``), under which
    /// every id's directory lies, in id order. `None` otherwise
    /// (`hls/v-{id}/`). Object storage lists such a prefix once per batch.
    #[cfg(feature = "s3")]
    pub(crate) fn static_dir(&self) -> Option<&str> {
        let first = self.pieces.first()?;
        let whole_dir = self.pieces.len() == 2 && self.pieces[1].is_empty();
        (self.dir && whole_dir && (first.is_empty() || first.ends_with('/')))
            .then_some(first.as_str())
    }

    /// The path of `id`, relative to the root, without the trailing `/`.
    pub(crate) fn render(&self, id: &VideoId) -> String {
        self.pieces.join(id.as_str())
    }

    /// The path of `id` with its kind.
    pub(crate) fn spec(&self, id: &VideoId) -> PathSpec {
        PathSpec {
            path: self.render(id),
            dir: self.dir,
        }
    }
}

/// Every path of one video on one target: its templates rendered, then
/// the paths its request named (a path named twice is erased once).
pub(crate) fn video_paths(
    templates: &[Template],
    id: &VideoId,
    named: &[PathSpec],
) -> Vec<PathSpec> {
    let mut paths: Vec<PathSpec> = templates.iter().map(|t| t.spec(id)).collect();
    for spec in named {
        if !paths.contains(spec) {
            paths.push(spec.clone());
        }
    }
    paths
}

/// Parses every template of a checked configuration.
pub(crate) fn parse_all(templates: &[String]) -> Vec<Template> {
    templates
        .iter()
        .map(|t| Template::parse(t).expect("templates are checked with the configuration"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_must_stay_inside_the_root_and_depend_on_the_id() {
        for ok in [
            "{id}",
            "{id}.mp4",
            "thumbs/{id}.jpg",
            "hls/{id}/",
            "{id}/",
            "a/b/{id}",
        ] {
            assert!(Template::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/abs/{id}",
            "../{id}",
            "a/../{id}",
            "./{id}",
            "a//{id}",
            "{id}//",
            "static.mp4",
            "{ids}",
            "{id}{x}",
            "a\\{id}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_paths_follow_the_template_rules_without_a_placeholder() {
        let file = PathSpec::parse_request("web/3f2a-720.mp4").unwrap();
        assert_eq!((file.path.as_str(), file.dir), ("web/3f2a-720.mp4", false));
        let dir = PathSpec::parse_request("hls/3f2a/").unwrap();
        assert_eq!((dir.path.as_str(), dir.dir), ("hls/3f2a", true));
        assert_eq!(dir.to_text(), "hls/3f2a/");
        assert!(
            PathSpec::parse_request("{uuid}.mp4").is_ok(),
            "braces are text"
        );
        let long = "a".repeat(MAX_REQUEST_PATH_BYTES);
        assert!(PathSpec::parse_request(&long).is_ok());
        for bad in [
            "", "/", "/abs.mp4", "../x", "a/../x", "a/./x", "./x", "a//x", "x//", "..", ".",
            "a\\b", "a\0b", "a\nb", "a\u{7f}b",
        ] {
            assert!(PathSpec::parse_request(bad).is_err(), "{bad:?}");
        }
        let too_long = "a".repeat(MAX_REQUEST_PATH_BYTES + 1);
        assert!(PathSpec::parse_request(&too_long)
            .unwrap_err()
            .contains("1024"));
    }

    #[test]
    fn rendering_replaces_every_placeholder_and_drops_the_trailing_slash() {
        let id = VideoId::parse("v1").unwrap();
        let hls = Template::parse("hls/{id}/").unwrap();
        assert_eq!((hls.render(&id).as_str(), hls.dir), ("hls/v1", true));
        let twice = Template::parse("{id}/{id}.mp4").unwrap();
        assert_eq!(
            (twice.render(&id).as_str(), twice.dir),
            ("v1/v1.mp4", false)
        );
    }
}
