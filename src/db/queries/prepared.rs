//! Raw SQL that stays prepared. diesel's `sql_query` marks itself unsafe to
//! cache, so each call parses and plans its statement again (SQLite), or
//! pays a prepare round trip before the execute (MySQL, PostgreSQL): on the
//! claim and the ack, run many times a second, that was a measurable share
//! of a drain. [`prepared`] is the same builder, but its statement is
//! cached per connection, keyed by its text and bind types, like the ones
//! diesel's DSL builds. Used on SQLite and PostgreSQL; MySQL's claim stays
//! a `sql_query` (see [`super::claim`]).
//!
//! Placeholders are written `?` whatever the backend; each becomes the
//! backend's own (`?` or `$n`) as its bind is pushed, in order. A value
//! used twice is bound twice.

use std::marker::PhantomData;

use diesel::backend::Backend;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::result::Error;
use diesel::serialize::ToSql;
use diesel::sql_types::{HasSqlType, Untyped};
use diesel::{QueryResult, RunQueryDsl};

/// A statement with its binds so far; see the module documentation.
#[must_use = "a statement does nothing until it is run"]
pub(super) struct Prepared<B> {
    sql: &'static str,
    binds: B,
}

/// Starts a statement; its `?` are filled by [`Prepared::bind`], in order.
pub(super) fn prepared(sql: &'static str) -> Prepared<()> {
    Prepared { sql, binds: () }
}

/// One bound value, of SQL type `ST`.
pub(super) struct Bind<ST, V> {
    value: V,
    sql_type: PhantomData<ST>,
}

impl<B> Prepared<B> {
    /// Binds the next `?` to `value`.
    pub(super) fn bind<ST, V>(self, value: V) -> Prepared<(B, Bind<ST, V>)> {
        Prepared {
            sql: self.sql,
            binds: (
                self.binds,
                Bind {
                    value,
                    sql_type: PhantomData,
                },
            ),
        }
    }
}

/// The binds of a statement, pushed in order between the pieces of its
/// text.
pub(super) trait Binds<DB: Backend> {
    /// Pushes every bind, each followed by the next piece of `sql`.
    fn walk<'b>(
        &'b self,
        pieces: &mut std::str::Split<'static, char>,
        out: &mut AstPass<'_, 'b, DB>,
    ) -> QueryResult<()>;
}

impl<DB: Backend> Binds<DB> for () {
    fn walk<'b>(
        &'b self,
        _: &mut std::str::Split<'static, char>,
        _: &mut AstPass<'_, 'b, DB>,
    ) -> QueryResult<()> {
        Ok(())
    }
}

impl<DB, B, ST, V> Binds<DB> for (B, Bind<ST, V>)
where
    DB: Backend + HasSqlType<ST>,
    B: Binds<DB>,
    V: ToSql<ST, DB>,
{
    fn walk<'b>(
        &'b self,
        pieces: &mut std::str::Split<'static, char>,
        out: &mut AstPass<'_, 'b, DB>,
    ) -> QueryResult<()> {
        self.0.walk(pieces, out)?;
        out.push_bind_param::<ST, V>(&self.1.value)?;
        let piece = pieces.next().ok_or_else(|| mismatch("more binds than"))?;
        out.push_sql(piece);
        Ok(())
    }
}

fn mismatch(what: &str) -> Error {
    Error::QueryBuilderError(format!("{what} placeholders in a prepared statement").into())
}

impl<DB: Backend, B: Binds<DB>> QueryFragment<DB> for Prepared<B> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        let mut pieces = self.sql.split('?');
        out.push_sql(pieces.next().unwrap_or_default());
        self.binds.walk(&mut pieces, &mut out)?;
        match pieces.next() {
            Some(_) => Err(mismatch("fewer binds than")),
            None => Ok(()),
        }
    }
}

/// Keyed by its text: not a static type id (the text is not part of the
/// type), but safe to cache, which `sql_query` is not.
impl<B> QueryId for Prepared<B> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<B> Query for Prepared<B> {
    type SqlType = Untyped;
}

impl<B, Conn> RunQueryDsl<Conn> for Prepared<B> {}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use std::sync::{Arc, Mutex};

    use diesel::connection::{Instrumentation, InstrumentationEvent};
    use diesel::prelude::*;
    use diesel::sql_types::{BigInt, Text};

    use super::prepared;

    #[derive(QueryableByName, Debug, PartialEq)]
    struct Row {
        #[diesel(sql_type = Text)]
        a: String,
        #[diesel(sql_type = BigInt)]
        b: i64,
    }

    /// Counts the statements diesel prepares and puts in its cache.
    #[derive(Clone, Default)]
    struct Prepares(Arc<Mutex<usize>>);

    impl Instrumentation for Prepares {
        fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
            if let InstrumentationEvent::CacheQuery { .. } = event {
                *self.0.lock().unwrap() += 1;
            }
        }
    }

    fn select(conn: &mut SqliteConnection, a: &str, b: i64) -> QueryResult<Vec<Row>> {
        prepared("SELECT ? AS a, ? + ? AS b")
            .bind::<Text, _>(a)
            .bind::<BigInt, _>(b)
            .bind::<BigInt, _>(b)
            .load(conn)
    }

    #[test]
    fn binds_fill_placeholders_in_order_and_the_statement_is_prepared_once() {
        let mut conn = SqliteConnection::establish(":memory:").unwrap();
        let prepares = Prepares::default();
        conn.set_instrumentation(prepares.clone());
        for b in 1..=3 {
            let rows = select(&mut conn, "x", b).unwrap();
            assert_eq!(
                rows,
                vec![Row {
                    a: "x".into(),
                    b: 2 * b
                }]
            );
        }
        assert_eq!(*prepares.0.lock().unwrap(), 1, "prepared once, then reused");
    }

    #[test]
    fn a_bind_count_that_does_not_match_the_placeholders_is_an_error() {
        let mut conn = SqliteConnection::establish(":memory:").unwrap();
        let too_few = prepared("SELECT ? AS a, ? AS b")
            .bind::<Text, _>("x")
            .load::<Row>(&mut conn);
        assert!(matches!(
            too_few,
            Err(diesel::result::Error::QueryBuilderError(_))
        ));
        let too_many = prepared("SELECT ? AS a, 1 AS b")
            .bind::<Text, _>("x")
            .bind::<Text, _>("y")
            .load::<Row>(&mut conn);
        assert!(matches!(
            too_many,
            Err(diesel::result::Error::QueryBuilderError(_))
        ));
    }
}
