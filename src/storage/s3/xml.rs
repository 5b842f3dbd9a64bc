//! Reading S3's XML answers with a pull parser, keeping only the fields a
//! caller asks for (a listing needs keys and markers, not dates, sizes and
//! ETags: parsing those was most of the CPU of an S3 drain, see
//! `list.rs`).
//!
//! Every S3 answer the scheduler reads has the same shape: a root element
//! holding fields (`<IsTruncated>`, `<NextKeyMarker>`, `<Status>`) and
//! records (`<Contents>`, `<Version>`, `<DeleteMarker>`, `<Deleted>`,
//! `<Error>`) holding fields of their own. Deeper elements (`<Owner>`)
//! are skipped.

use quick_xml::events::Event;

/// What [`read`] hands its caller, in document order.
pub(super) enum Item<'a> {
    /// A wanted field's text.
    Field(Field<'a>),
    /// A record (or a root field that was not wanted) closed: its name.
    End(&'a [u8]),
}

/// A field's text, inside a record or on the root element.
pub(super) struct Field<'a> {
    /// The record's element name (`Version`), `None` on the root.
    pub record: Option<&'a [u8]>,
    /// The field's element name (`Key`).
    pub name: &'a [u8],
    pub text: String,
}

/// Reads `body`: `on` receives each wanted field's whole text in document
/// order (entities resolved, text split around them joined), and each
/// record's name when it closes. `want(record, field)` says which fields
/// to read at all.
pub(super) fn read(
    body: &[u8],
    want: impl Fn(Option<&[u8]>, &[u8]) -> bool,
    mut on: impl FnMut(Item<'_>),
) -> Result<(), String> {
    let mut reader = quick_xml::Reader::from_reader(body);
    // Depth 1 is the root, 2 its fields and records, 3 a record's fields.
    let mut depth = 0;
    let mut record: Vec<u8> = Vec::new();
    let mut field: Option<(Vec<u8>, String)> = None;
    loop {
        match reader.read_event().map_err(|e| e.to_string())? {
            Event::Start(element) => {
                depth += 1;
                let name = element.local_name();
                let name = name.as_ref();
                field = None;
                if depth == 2 {
                    // A field of the root, or a record: a record's own
                    // start is never a field with text, so both are set.
                    record.clear();
                    record.extend_from_slice(name);
                    if want(None, name) {
                        field = Some((name.to_vec(), String::new()));
                    }
                } else if depth == 3 && want(Some(&record), name) {
                    field = Some((name.to_vec(), String::new()));
                }
            }
            Event::End(_) => {
                if let Some((name, text)) = field.take() {
                    let in_record = (depth == 3).then_some(record.as_slice());
                    on(Item::Field(Field {
                        record: in_record,
                        name: &name,
                        text,
                    }));
                } else if depth == 2 {
                    on(Item::End(&record));
                }
                depth -= 1;
            }
            Event::Eof => return Ok(()),
            event => {
                if let Some((_, value)) = &mut field {
                    push_text(value, event)?;
                }
            }
        }
    }
}

/// Appends what `event` adds to an element's text: text, CDATA, or an
/// entity (`&amp;`, `&#233;`) resolved.
fn push_text(value: &mut String, event: Event<'_>) -> Result<(), String> {
    let text = match event {
        Event::Text(text) => text.decode().map_err(|e| e.to_string())?,
        Event::CData(text) => text.decode().map_err(|e| e.to_string())?,
        Event::GeneralRef(entity) => {
            if let Some(c) = entity.resolve_char_ref().map_err(|e| e.to_string())? {
                value.push(c);
                return Ok(());
            }
            let name = entity.decode().map_err(|e| e.to_string())?;
            quick_xml::escape::resolve_predefined_entity(&name)
                .ok_or_else(|| format!("unknown entity &{name};"))?
                .into()
        }
        _ => return Ok(()),
    };
    value.push_str(&text);
    Ok(())
}

/// `Code: Message` of an S3 error answer, when it is one.
pub(super) fn s3_error(body: &[u8]) -> Option<String> {
    let (mut code, mut message) = (None, None);
    read(
        body,
        |record, name| record.is_none() && matches!(name, b"Code" | b"Message"),
        |item| match item {
            Item::Field(f) if f.name == b"Code" => code = Some(f.text),
            Item::Field(f) => message = Some(f.text),
            Item::End(_) => {}
        },
    )
    .ok()?;
    match (code, message) {
        (Some(code), Some(message)) => Some(format!("{code}: {message}")),
        (code, message) => code.or(message),
    }
}

/// Escapes text for an XML element's content.
pub(super) fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_come_with_their_record_and_deeper_elements_are_skipped() {
        let body = "<R><IsTruncated>true</IsTruncated>\
                    <Version><Key>a &amp; b</Key><Owner><ID>x</ID></Owner><VersionId>1</VersionId></Version>\
                    <DeleteMarker><Key>c</Key></DeleteMarker><Next>n</Next></R>";
        let mut seen = Vec::new();
        read(
            body.as_bytes(),
            |_, _| true,
            |item| match item {
                Item::Field(f) => seen.push(format!(
                    "{}.{}={}",
                    f.record
                        .map_or("-".into(), |r| String::from_utf8_lossy(r).to_string()),
                    String::from_utf8_lossy(f.name),
                    f.text
                )),
                Item::End(r) => seen.push(format!("end {}", String::from_utf8_lossy(r))),
            },
        )
        .unwrap();
        assert_eq!(
            seen,
            [
                "-.IsTruncated=true",
                "Version.Key=a & b",
                "Version.VersionId=1",
                "end Version",
                "DeleteMarker.Key=c",
                "end DeleteMarker",
                "-.Next=n"
            ]
        );
    }

    #[test]
    fn broken_xml_is_an_error() {
        assert!(read(b"<R><Contents><Key>a</Contents>", |_, _| true, |_| {}).is_err());
    }

    #[test]
    fn an_error_answer_gives_its_code_and_message() {
        let body = "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code>\
                    <Message>The request signature we calculated does not match</Message>\
                    <RequestId>1</RequestId></Error>";
        assert_eq!(
            s3_error(body.as_bytes()).as_deref(),
            Some("SignatureDoesNotMatch: The request signature we calculated does not match")
        );
        assert_eq!(s3_error(b""), None);
    }
}
