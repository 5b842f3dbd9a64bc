//! Raw SQL that stays prepared. diesel's `sql_query` marks itself unsafe to
//! cache, so each call parses and plans its statement again (SQLite), or
//! pays a prepare round trip before the execute (MySQL, PostgreSQL): on the
//! claim and the ack, run many times a second, that was a measurable share
//! of a drain. [`prepared`] is the same builder, but its statement is
//! cached per connection, keyed by its text and bind types, like the ones
//! diesel's DSL builds.
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
pub struct Prepared<B> {
    sql: &'static str,
    binds: B,
}

/// Starts a statement; its `?` are filled by [`Prepared::bind`], in order.
pub fn prepared(sql: &'static str) -> Prepared<()> {
    Prepared { sql, binds: () }
}

/// One bound value, of SQL type `ST`.
pub struct Bind<ST, V> {
    value: V,
    sql_type: PhantomData<ST>,
}

impl<B> Prepared<B> {
    /// Binds the next `?` to `value`.
    pub fn bind<ST, V>(self, value: V) -> Prepared<(B, Bind<ST, V>)> {
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
pub trait Binds<DB: Backend> {
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
