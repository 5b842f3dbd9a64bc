//! DeleteObjects, sent and read here: with a `VersionId` per entry when
//! versions are purged (object_store cannot), and the answer read entry by
//! entry, so that an entry is done only when the server says `Deleted`,
//! and a plain delete that created a delete marker (the bucket is
//! versioned, whatever the last GetBucketVersioning said) is seen.

use std::collections::{HashMap, VecDeque};

use base64::Engine;
use md5::{Digest, Md5};

use super::client::{Client, Request, RequestError};
use super::xml::{self, Item};

/// Most entries in one DeleteObjects request (the S3 API's limit).
pub(super) const MAX_ENTRIES: usize = 1000;

/// One entry to delete: a key, or one version of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Entry<'a> {
    pub key: &'a str,
    /// `None`: a plain delete (on a versioned bucket, a delete marker).
    pub version_id: Option<&'a str>,
}

/// What the server answered for one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Answer {
    Deleted {
        /// A plain delete (no version id) made a delete marker: the
        /// object's bytes are still there.
        marker_created: bool,
    },
    /// Not deleted: the server's code and message (and the version).
    Failed(String),
}

/// Deletes `entries` (at most [`MAX_ENTRIES`]) in one request; with
/// `bypass_governance`, versions under governance-mode retention too.
/// `Ok` holds one answer per entry, in order; `Err` when the request failed
/// as a whole.
pub(super) async fn delete(
    client: &Client,
    entries: &[Entry<'_>],
    bypass_governance: bool,
) -> Result<Vec<Answer>, RequestError> {
    let body = request_body(entries);
    // S3 requires an integrity header on DeleteObjects; MinIO enforces it.
    let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&body));
    let mut headers = vec![
        ("content-md5", md5),
        ("content-type", "application/xml".to_owned()),
    ];
    if bypass_governance {
        headers.push(("x-amz-bypass-governance-retention", "true".to_owned()));
    }
    let answer = client
        .send(Request {
            operation: "DeleteObjects",
            method: http::Method::POST,
            query: "delete=".to_owned(),
            headers,
            body,
        })
        .await?;
    read_answer(&answer, entries).map_err(|e| RequestError {
        reason: format!("DeleteObjects: unreadable answer: {e}"),
        transient: false,
        not_implemented: false,
    })
}

/// `<Delete>` with one `<Object>` per entry. Not `Quiet`: every entry must
/// come back `Deleted` to count as deleted.
fn request_body(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut body = String::with_capacity(64 + entries.len() * 64);
    body.push_str(r#"<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/">"#);
    for entry in entries {
        body.push_str("<Object><Key>");
        body.push_str(&xml::escape(entry.key));
        body.push_str("</Key>");
        if let Some(version) = entry.version_id {
            body.push_str("<VersionId>");
            body.push_str(&xml::escape(version));
            body.push_str("</VersionId>");
        }
        body.push_str("</Object>");
    }
    body.push_str("</Delete>");
    body.into_bytes()
}

/// One `<Deleted>` or `<Error>` record of the answer.
#[derive(Debug, Default)]
struct Record {
    key: String,
    version_id: Option<String>,
    delete_marker: bool,
    code: Option<String>,
    message: Option<String>,
}

/// The `<Deleted>` and `<Error>` records of a DeleteObjects answer.
fn read_records(body: &[u8]) -> Result<(Vec<Record>, Vec<Record>), String> {
    let mut deleted: Vec<Record> = Vec::new();
    let mut errors: Vec<Record> = Vec::new();
    let mut record = Record::default();
    xml::read(
        body,
        |record, name| {
            matches!(record, Some(b"Deleted" | b"Error"))
                && matches!(
                    name,
                    b"Key" | b"VersionId" | b"DeleteMarker" | b"Code" | b"Message"
                )
        },
        |item| match item {
            Item::Field(f) => match f.name {
                b"Key" => record.key = f.text,
                b"VersionId" => record.version_id = Some(f.text),
                b"DeleteMarker" => record.delete_marker = f.text.trim() == "true",
                b"Code" => record.code = Some(f.text),
                _ => record.message = Some(f.text),
            },
            Item::End(b"Deleted") => deleted.push(std::mem::take(&mut record)),
            Item::End(b"Error") => errors.push(std::mem::take(&mut record)),
            Item::End(_) => {}
        },
    )?;
    Ok((deleted, errors))
}

/// Matches the answer's records to `entries`: by key and version id, or
/// by key alone when the server left the version out. An entry the answer
/// does not mention failed (it may or may not be deleted: it is retried).
fn read_answer(body: &[u8], entries: &[Entry<'_>]) -> Result<Vec<Answer>, String> {
    let (deleted, errors) = read_records(body)?;
    let mut answers: Vec<Option<Answer>> = vec![None; entries.len()];
    let mut exact: HashMap<(&str, Option<&str>), VecDeque<usize>> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        exact.entry((e.key, e.version_id)).or_default().push_back(i);
    }
    let answer = |record: &Record, entry: &Entry<'_>| match &record.code {
        None => Answer::Deleted {
            marker_created: record.delete_marker && entry.version_id.is_none(),
        },
        Some(code) => Answer::Failed(failure(record, code)),
    };
    // Exact matches first, so that a record without a version id cannot
    // take the place of another version's exact answer.
    let mut loose = Vec::new();
    for record in deleted.iter().chain(&errors) {
        let key = (record.key.as_str(), record.version_id.as_deref());
        match exact.get_mut(&key).and_then(VecDeque::pop_front) {
            Some(at) => answers[at] = Some(answer(record, &entries[at])),
            None if record.version_id.is_none() => loose.push(record),
            None => {}
        }
    }
    for record in loose {
        let unanswered =
            (0..entries.len()).find(|&i| answers[i].is_none() && entries[i].key == record.key);
        if let Some(at) = unanswered {
            answers[at] = Some(answer(record, &entries[at]));
        }
    }
    let first: HashMap<&Entry<'_>, usize> = entries
        .iter()
        .enumerate()
        .rev()
        .map(|(i, e)| (e, i))
        .collect();
    let deleted_first = |i: usize| {
        let at = first[&entries[i]];
        at < i && matches!(answers[at], Some(Answer::Deleted { .. }))
    };
    let twins: Vec<bool> = (0..entries.len())
        .map(|i| answers[i].is_none() && deleted_first(i))
        .collect();
    Ok(answers
        .into_iter()
        .zip(twins)
        .map(|(answer, twin)| match (answer, twin) {
            (Some(answer), _) => answer,
            // A key asked twice (two paths of a batch naming it) has one
            // answer: the other is as deleted as the first.
            (None, true) => Answer::Deleted {
                marker_created: false,
            },
            (None, false) => Answer::Failed("not in the DeleteObjects answer".into()),
        })
        .collect())
}

/// `version V: Code: Message` of a refused entry.
fn failure(record: &Record, code: &str) -> String {
    let version = record
        .version_id
        .as_deref()
        .map_or_else(String::new, |v| format!("version {v}: "));
    match &record.message {
        Some(message) => format!("{version}{code}: {message}"),
        None => format!("{version}{code}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(key: &'a str, version: Option<&'a str>) -> Entry<'a> {
        Entry {
            key,
            version_id: version,
        }
    }

    #[test]
    fn the_request_names_each_key_and_version_escaped() {
        let body = request_body(&[entry("a&b", None), entry("c", Some("v<1"))]);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
             <Object><Key>a&amp;b</Key></Object>\
             <Object><Key>c</Key><VersionId>v&lt;1</VersionId></Object></Delete>"
        );
    }

    #[test]
    fn each_entry_gets_its_own_answer() {
        let entries = [
            entry("k", Some("1")),
            entry("k", Some("2")),
            entry("locked", Some("3")),
            entry("plain", None),
            entry("lost", Some("4")),
        ];
        let body = "<DeleteResult>\
            <Deleted><Key>k</Key><VersionId>2</VersionId></Deleted>\
            <Deleted><Key>k</Key><VersionId>1</VersionId><DeleteMarker>true</DeleteMarker>\
              <DeleteMarkerVersionId>1</DeleteMarkerVersionId></Deleted>\
            <Error><Key>locked</Key><VersionId>3</VersionId><Code>AccessDenied</Code>\
              <Message>Access Denied because object protected by object lock.</Message></Error>\
            <Deleted><Key>plain</Key><DeleteMarker>true</DeleteMarker></Deleted>\
            </DeleteResult>";
        let answers = read_answer(body.as_bytes(), &entries).unwrap();
        assert_eq!(
            answers,
            [
                // Deleting a delete marker by version is not making one.
                Answer::Deleted {
                    marker_created: false
                },
                Answer::Deleted {
                    marker_created: false
                },
                Answer::Failed(
                    "version 3: AccessDenied: Access Denied because object protected by object lock."
                        .into()
                ),
                Answer::Deleted {
                    marker_created: true
                },
                Answer::Failed("not in the DeleteObjects answer".into()),
            ]
        );
    }

    #[test]
    fn an_error_without_a_version_id_fails_an_entry_of_its_key() {
        // moto names only the key of a refused version.
        let entries = [entry("g", Some("1")), entry("h", Some("2"))];
        let body = "<DeleteResult><Error><Key>g</Key><Code>AccessDenied</Code></Error>\
                    <Deleted><Key>h</Key><VersionId>2</VersionId></Deleted></DeleteResult>";
        let answers = read_answer(body.as_bytes(), &entries).unwrap();
        assert_eq!(answers[0], Answer::Failed("AccessDenied".into()));
        assert!(matches!(answers[1], Answer::Deleted { .. }));
    }

    #[test]
    fn a_key_asked_twice_is_deleted_once() {
        let entries = [entry("same", None), entry("same", None)];
        let body = "<DeleteResult><Deleted><Key>same</Key></Deleted></DeleteResult>";
        let answers = read_answer(body.as_bytes(), &entries).unwrap();
        assert!(answers.iter().all(|a| matches!(a, Answer::Deleted { .. })));
    }
}
