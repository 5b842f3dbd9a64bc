//! A database URL: which backend its scheme names (and the URL its driver
//! wants), and how to print it without its password. The only part of the
//! database layer the configuration needs (to check `database_url`, and to
//! show it), so it imports nothing else.

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Mysql,
    Postgres,
}

impl Backend {
    /// Parses the scheme of `url`; returns the backend and the URL its
    /// driver expects (a file path for SQLite).
    pub(crate) fn from_url(url: &str) -> Result<(Backend, String), String> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            format!("{url:?} has no scheme; use sqlite://, mysql:// or postgres://")
        })?;
        let backend = match scheme {
            "sqlite" => Backend::Sqlite,
            "mysql" | "mariadb" => Backend::Mysql,
            "postgres" | "postgresql" => Backend::Postgres,
            other => {
                return Err(format!(
                    "unknown scheme {other}://; use sqlite://, mysql:// or postgres://"
                ))
            }
        };
        if !backend.compiled() {
            return Err(format!(
                "{scheme}:// needs a binary built with `--features {}`",
                backend.feature()
            ));
        }
        let driver_url = match backend {
            Backend::Sqlite if rest.is_empty() || rest == ":memory:" => {
                return Err("sqlite:// needs a file path: sqlite://PATH".into())
            }
            Backend::Sqlite => rest.to_owned(),
            Backend::Mysql => format!("mysql://{rest}"),
            Backend::Postgres => url.to_owned(),
        };
        Ok((backend, driver_url))
    }

    /// The cargo feature that compiles this backend in.
    pub(crate) fn feature(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Mysql => "mysql",
            Backend::Postgres => "postgres",
        }
    }

    /// Whether this binary can talk to the backend.
    pub(crate) fn compiled(self) -> bool {
        match self {
            Backend::Sqlite => cfg!(feature = "sqlite"),
            Backend::Mysql => cfg!(feature = "mysql"),
            Backend::Postgres => cfg!(feature = "postgres"),
        }
    }
}

/// `url` without its password, for messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
