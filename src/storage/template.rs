//! Path templates (`storage.paths`), parsed and checked in one place for
//! every storage kind: `thumbs/{id}.jpg` names one file or object key,
//! `hls/{id}/` (a trailing `/`) a directory removed recursively or a key
//! prefix whose every object is deleted.

use crate::video_id::VideoId;

/// One entry of `storage.paths`, split once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
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
    pub fn parse(template: &str) -> Result<Template, &'static str> {
        if !template.contains("{id}") {
            return Err("must contain {id}");
        }
        let without_id = template.replace("{id}", "");
        if without_id.contains(['{', '}']) {
            return Err("only the placeholder {id} is known");
        }
        if without_id.contains(['\0', '\\']) {
            return Err("must not contain NUL or backslash");
        }
        if template.starts_with('/') {
            return Err("must be relative to storage.root");
        }
        let body = template.strip_suffix('/').unwrap_or(template);
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
        Ok(Template {
            pieces: body.split("{id}").map(str::to_owned).collect(),
            dir: template.ends_with('/'),
        })
    }

    /// For a directory template whose `{id}` starts a path segment
    /// (`hls/{id}/`, `{id}/`): the text before it (`hls/`, ``), under which
    /// every id's directory lies, in id order. `None` otherwise
    /// (`hls/v-{id}/`).
    pub fn static_dir(&self) -> Option<&str> {
        let first = self.pieces.first()?;
        let whole_dir = self.pieces.len() == 2 && self.pieces[1].is_empty();
        (self.dir && whole_dir && (first.is_empty() || first.ends_with('/')))
            .then_some(first.as_str())
    }

    /// The path of `id`, relative to the root, without the trailing `/`.
    pub fn render(&self, id: &VideoId) -> String {
        self.pieces.join(id.as_str())
    }
}

/// Parses every template of a checked configuration.
pub fn parse_all(templates: &[String]) -> Vec<Template> {
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
