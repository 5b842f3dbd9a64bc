//! A database URL: which backend its scheme names (and the URL its driver
//! wants; PostgreSQL's keyword form `host=... dbname=...` is taken too),
//! and how to print it, or a driver's message about it, without a password. The only part of the
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
        let Some((scheme, rest)) = url.split_once("://") else {
            // Not echoed: what is not a URL may still hold a password.
            if !is_keyword_form(url) {
                return Err(
                    "has no scheme; use sqlite://PATH, mysql://..., postgres://... \
                            or PostgreSQL's keyword form (host=... dbname=...)"
                        .into(),
                );
            }
            return Backend::Postgres
                .usable("PostgreSQL's keyword form")
                .map(|b| (b, with_pg_defaults(url)));
        };
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
        backend.usable(&format!("{scheme}://"))?;
        let driver_url = match backend {
            Backend::Sqlite if rest.is_empty() || rest == ":memory:" => {
                return Err("sqlite:// needs a file path: sqlite://PATH".into())
            }
            Backend::Sqlite => rest.to_owned(),
            Backend::Mysql => format!("mysql://{rest}"),
            Backend::Postgres => with_pg_defaults(url),
        };
        Ok((backend, driver_url))
    }

    /// Itself when compiled in, otherwise why not.
    fn usable(self, written: &str) -> Result<Backend, String> {
        match self.compiled() {
            true => Ok(self),
            false => Err(format!(
                "{written} needs a binary built with `--features {}`",
                self.feature()
            )),
        }
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

/// What stands for a password in anything printed.
const MASK: &str = "***";

/// `url` with every password in it masked, for messages, logs and the
/// effective configuration: the userinfo's (`user:PASSWORD@host`), a
/// `password=` query parameter's, and in PostgreSQL's keyword form
/// (`host=... password=...`) the `password` value's. When in doubt it
/// masks more (a URL whose userinfo cannot be told from its path shows
/// `***` for all of it), never less.
/// libpq settings every PostgreSQL connection gets unless its URL sets
/// them: a connection attempt gives up after 3 s, and a connection whose
/// server stops answering (a partition, a crashed host) is found dead in
/// about 10 s, whether it is idle or waiting for a reply (keepalive probes
/// after 5 s of silence, 2 s apart, 3 unanswered), or has sent data that is
/// never acknowledged (`tcp_user_timeout`, ms). Without them a query
/// caught by a partition waits for TCP's retransmissions, many minutes.
const PG_DEFAULTS: &[(&str, &str)] = &[
    ("connect_timeout", "3"),
    ("keepalives", "1"),
    ("keepalives_idle", "5"),
    ("keepalives_interval", "2"),
    ("keepalives_count", "3"),
    ("tcp_user_timeout", "10000"),
];

/// A PostgreSQL URL or keyword string with [`PG_DEFAULTS`] added where it
/// does not set them itself.
fn with_pg_defaults(url: &str) -> String {
    let keyword_form = !url.contains("://");
    let set = |key: &str| {
        if keyword_form {
            url.split_whitespace()
                .any(|kv| kv.split('=').next() == Some(key))
        } else {
            url.split_once('?').is_some_and(|(_, query)| {
                query.split('&').any(|kv| kv.split('=').next() == Some(key))
            })
        }
    };
    let mut out = url.to_owned();
    for (key, value) in PG_DEFAULTS.iter().filter(|(key, _)| !set(key)) {
        let separator = match (keyword_form, out.contains('?')) {
            (true, _) => " ",
            (false, true) => "&",
            (false, false) => "?",
        };
        out.push_str(&format!("{separator}{key}={value}"));
    }
    out
}

pub(crate) fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", redact_after_scheme(rest)),
        None => redact_keywords(url),
    }
}

/// Every password that `url` holds, as written and percent-decoded, so
/// that a message a driver made (which may quote what it was given) can be
/// cleaned of them by [`scrub`].
fn passwords(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    match url.split_once("://") {
        Some((_, rest)) => {
            let masked = redact_query(rest);
            if let Some((user, at)) = userinfo_password(&masked) {
                found.push(masked[user.len() + 1..at].to_owned());
            }
            for pair in rest.split(['?', '&', '#']) {
                if let Some((key, value)) = pair.split_once('=') {
                    if key.eq_ignore_ascii_case("password") {
                        found.push(value.to_owned());
                    }
                }
            }
        }
        None => found.extend(keyword_values(url, "password").map(|(_, value)| value.to_owned())),
    }
    let decoded: Vec<String> = found
        .iter()
        .filter_map(|p| percent_encoding::percent_decode_str(p).decode_utf8().ok())
        .filter(|p| found.iter().all(|f| f != p))
        .map(|p| p.into_owned())
        .collect();
    found.extend(decoded);
    found.retain(|p| !p.is_empty());
    // Longest first: a password that contains another is masked whole.
    found.sort_by_key(|p| std::cmp::Reverse(p.len()));
    found
}

/// `message` (a driver's error, say) with every password of `url` masked,
/// and the URL itself redacted wherever it appears whole.
pub(crate) fn scrub(message: &str, url: &str) -> String {
    let mut clean = message.replace(url, &redact(url));
    for password in passwords(url) {
        clean = clean.replace(&password, MASK);
    }
    clean
}

/// The part after `scheme://`: `password` query parameters first (their
/// values may hold `@`), then the userinfo up to the last `@` left (a
/// password may hold `@`, `/` or `?` unencoded).
fn redact_after_scheme(rest: &str) -> String {
    let rest = redact_query(rest);
    match userinfo_password(&rest) {
        Some((user, at)) => format!("{user}:{MASK}{}", &rest[at..]),
        None => rest,
    }
}

/// In `rest` (after `scheme://`, its query already masked): the user and
/// where the `@` ending the userinfo is, when the userinfo has a password.
fn userinfo_password(rest: &str) -> Option<(&str, usize)> {
    let at = rest.rfind('@')?;
    let (user, _) = rest[..at].split_once(':')?;
    Some((user, at))
}

/// `text` with the value of every `password=` that starts a query
/// parameter (after `?` or `&`, any case) masked up to the next `&` or `#`.
fn redact_query(text: &str) -> String {
    const KEY: &str = "password=";
    let lower = text.to_ascii_lowercase();
    let (mut out, mut copied, mut from) = (String::with_capacity(text.len()), 0, 0);
    while let Some(found) = lower[from..].find(KEY) {
        let start = from + found;
        let value = start + KEY.len();
        from = value;
        if start == 0 || !matches!(text.as_bytes()[start - 1], b'?' | b'&') {
            continue;
        }
        let end = text[value..]
            .find(['&', '#'])
            .map_or(text.len(), |n| value + n);
        out.push_str(&text[copied..value]);
        out.push_str(MASK);
        (copied, from) = (end, end);
    }
    out.push_str(&text[copied..]);
    out
}

/// PostgreSQL's keyword form with the `password` value masked.
fn redact_keywords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (span, _) in keyword_values(text, "password") {
        out.push_str(&text[last..span.start]);
        out.push_str(MASK);
        last = span.end;
    }
    out.push_str(&text[last..]);
    out
}

/// The values of `key` in libpq's keyword form (`key = value`, a value
/// either a bare word or single-quoted with `\'` and `\\` escapes), each
/// with the byte span it takes in `text` (quotes included).
fn keyword_values<'a>(
    text: &'a str,
    key: &'a str,
) -> impl Iterator<Item = (std::ops::Range<usize>, &'a str)> + 'a {
    let mut pos = 0;
    std::iter::from_fn(move || loop {
        let rest = &text[pos..];
        let trimmed = rest.trim_start();
        if trimmed.is_empty() {
            return None;
        }
        let name_start = pos + (rest.len() - trimmed.len());
        let name_len = trimmed
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(trimmed.len());
        let name = &text[name_start..name_start + name_len];
        let after_name = &text[name_start + name_len..];
        let Some(after_eq) = after_name.trim_start().strip_prefix('=') else {
            pos = name_start + name_len.max(1);
            continue;
        };
        let value_start = text.len() - after_eq.trim_start().len();
        let value_end = value_end(text, value_start);
        pos = value_end;
        if name.eq_ignore_ascii_case(key) {
            return Some((value_start..value_end, &text[value_start..value_end]));
        }
    })
}

/// Where the keyword-form value starting at `start` ends.
fn value_end(text: &str, start: usize) -> usize {
    let bytes = text.as_bytes();
    if bytes.get(start) != Some(&b'\'') {
        return text[start..]
            .find(char::is_whitespace)
            .map_or(text.len(), |n| start + n);
    }
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'\'' => return i + 1,
            _ => i += 1,
        }
    }
    text.len()
}

/// Whether `text` is PostgreSQL's keyword form (`host=... dbname=...`):
/// it starts with a word followed by `=`.
fn is_keyword_form(text: &str) -> bool {
    let trimmed = text.trim_start();
    let name_len = trimmed
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(trimmed.len());
    name_len > 0 && trimmed[name_len..].trim_start().starts_with('=')
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARKER: &str = "s3cr3t-m@rker";

    #[test]
    fn the_userinfo_password_is_masked_even_with_an_at_sign_in_it() {
        let url = format!("postgres://app:{MARKER}@db.internal:5432/videos");
        assert_eq!(redact(&url), "postgres://app:***@db.internal:5432/videos");
        assert_eq!(
            redact("mysql://root@127.0.0.1/test"),
            "mysql://root@127.0.0.1/test"
        );
        assert_eq!(
            redact("sqlite://video-scheduler.db"),
            "sqlite://video-scheduler.db"
        );
    }

    #[test]
    fn a_password_query_parameter_is_masked() {
        let url =
            format!("postgres://app@h/db?sslmode=require&password={MARKER}&application_name=x");
        let shown = redact(&url);
        assert_eq!(
            shown,
            "postgres://app@h/db?sslmode=require&password=***&application_name=x"
        );
        let url = format!("postgresql:///videos?host=/run/postgresql&PASSWORD={MARKER}");
        assert!(!redact(&url).contains("m@rker"), "{}", redact(&url));
    }

    #[test]
    fn the_keyword_form_s_password_is_masked_bare_or_quoted() {
        let text = format!("host=127.0.0.1 port=5432 password={MARKER} dbname=videos");
        assert_eq!(
            redact(&text),
            "host=127.0.0.1 port=5432 password=*** dbname=videos"
        );
        let text = r"host=h password = 'it\'s a secret' dbname=v";
        assert_eq!(redact(text), "host=h password = *** dbname=v");
        assert!(is_keyword_form(text));
        assert!(!is_keyword_form("video-scheduler.db"));
    }

    #[test]
    #[cfg(feature = "postgres")]
    fn postgres_connections_get_timeouts_and_keepalives_unless_the_url_sets_them() {
        let (_, url) = Backend::from_url("postgres://u@h/db?keepalives_idle=30").unwrap();
        assert_eq!(
            url,
            "postgres://u@h/db?keepalives_idle=30&connect_timeout=3&keepalives=1\
             &keepalives_interval=2&keepalives_count=3&tcp_user_timeout=10000"
        );
        let (_, url) = Backend::from_url("postgres://u@h/db").unwrap();
        assert!(
            url.starts_with("postgres://u@h/db?connect_timeout=3&"),
            "{url}"
        );
        let (_, url) = Backend::from_url("host=h dbname=db tcp_user_timeout=500").unwrap();
        assert!(url.starts_with("host=h dbname=db tcp_user_timeout=500 connect_timeout=3 "));
        assert_eq!(url.matches("tcp_user_timeout").count(), 1, "{url}");
    }

    #[test]
    fn scrub_masks_a_password_a_driver_repeats_encoded_or_not() {
        let url = "postgres://app:p%40ss%2Fword@h/db";
        let message = "could not connect to postgres://app:p%40ss%2Fword@h/db (password p@ss/word)";
        let clean = scrub(message, url);
        assert!(
            !clean.contains("p@ss/word") && !clean.contains("p%40ss"),
            "{clean}"
        );
    }
}
