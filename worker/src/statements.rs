//! Statements sent unnamed, with their parameters' types given, so that
//! they work through any connection pooler.
//!
//! tokio-postgres's `query`, `execute` and friends given a `&str` first
//! prepare a *named* statement (`s1`, `s2`, ...) and then run it, each
//! step ending in its own Sync: PgBouncer in transaction mode may hand the
//! connection's next step to another server connection, where the
//! statement does not exist ("prepared statement s3 does not exist"), or
//! leave it behind on one where the name is later taken again ("already
//! exists"). `prepare_cached` keeps statements longer still. The functions
//! here send Parse (unnamed), Bind, Describe, Execute and Sync at once
//! (tokio-postgres's `query_typed`): one round trip, and nothing is left
//! on the server.
//!
//! Without prepare the server does not say what type each `$n` is, so the
//! parameter says it itself ([`PgParam`]): the Rust types map to the types
//! the server inferred before, when `ToSql::accepts` checked them against
//! the prepared statement. SQL that needs another type (an enum, `inet`
//! from text, ...) casts its parameter (`$2::smsbus.status`).
//!
//! Result columns should be of built-in types: one of a type the client
//! has not seen (an enum, a composite) makes tokio-postgres look it up
//! with a prepared statement of its own, as it did before.
//!
//! ```ignore
//! use crate::statements::{self, params};
//! let row = statements::query_one(&client, "SELECT smsbus._release($1)", &params![worker]).await?;
//! ```

use std::net::IpAddr;
use std::time::SystemTime;

use tokio_postgres::types::{Json, ToSql, Type};
use tokio_postgres::{Error, GenericClient, Row};

/// A parameter whose PostgreSQL type follows from its Rust type.
///
/// The type is a function of the Rust type alone (not of the value), so
/// that a `None` or an empty `Vec` have one too.
pub trait PgParam: ToSql + Sync {
    fn pg_type() -> Type;
}

/// A [`PgParam`] that can also be an array's element: `Vec<T>` and `&[T]`
/// are of the array type.
pub trait PgElement: PgParam {
    fn pg_array_type() -> Type;
}

macro_rules! pg_types {
    ($($rust:ty => $scalar:ident, $array:ident;)*) => {
        $(
            impl PgParam for $rust {
                fn pg_type() -> Type {
                    Type::$scalar
                }
            }

            impl PgElement for $rust {
                fn pg_array_type() -> Type {
                    Type::$array
                }
            }
        )*
    };
}

pg_types! {
    bool => BOOL, BOOL_ARRAY;
    i16 => INT2, INT2_ARRAY;
    i32 => INT4, INT4_ARRAY;
    i64 => INT8, INT8_ARRAY;
    f32 => FLOAT4, FLOAT4_ARRAY;
    f64 => FLOAT8, FLOAT8_ARRAY;
    &str => TEXT, TEXT_ARRAY;
    String => TEXT, TEXT_ARRAY;
    Box<str> => TEXT, TEXT_ARRAY;
    std::borrow::Cow<'_, str> => TEXT, TEXT_ARRAY;
    Vec<u8> => BYTEA, BYTEA_ARRAY;
    &[u8] => BYTEA, BYTEA_ARRAY;
    serde_json::Value => JSONB, JSONB_ARRAY;
    SystemTime => TIMESTAMPTZ, TIMESTAMPTZ_ARRAY;
    IpAddr => INET, INET_ARRAY;
}

/// JSON the worker serializes itself goes to jsonb, as `serde_json::Value`.
impl<T: serde::Serialize + std::fmt::Debug + Sync> PgParam for Json<T> {
    fn pg_type() -> Type {
        Type::JSONB
    }
}

impl<T: serde::Serialize + std::fmt::Debug + Sync> PgElement for Json<T> {
    fn pg_array_type() -> Type {
        Type::JSONB_ARRAY
    }
}

/// Null or a value: the value's type either way.
impl<T: PgParam> PgParam for Option<T> {
    fn pg_type() -> Type {
        T::pg_type()
    }
}

impl<T: PgElement> PgElement for Option<T> {
    fn pg_array_type() -> Type {
        T::pg_array_type()
    }
}

impl<T: PgParam> PgParam for &T {
    fn pg_type() -> Type {
        T::pg_type()
    }
}

impl<T: PgElement> PgElement for &T {
    fn pg_array_type() -> Type {
        T::pg_array_type()
    }
}

impl<T: PgElement> PgParam for Vec<T> {
    fn pg_type() -> Type {
        T::pg_array_type()
    }
}

impl<T: PgElement> PgParam for &[T] {
    fn pg_type() -> Type {
        T::pg_array_type()
    }
}

/// `value` with its type, as one of the parameters [`query`] and the
/// others take; [`params!`](crate::statements::params) writes these.
pub fn typed<T: PgParam>(value: &T) -> (&(dyn ToSql + Sync), Type) {
    (value, T::pg_type())
}

/// The parameters of a statement, each with its type:
/// `params![id, &name, &ids]` is
/// `[(&id, Type::INT8), (&&name, Type::TEXT), (&&ids, Type::INT8_ARRAY)]`,
/// to pass as `&params![...]`.
macro_rules! params {
    ($($value:expr),* $(,)?) => {
        [$($crate::statements::typed(&$value)),*]
    };
}
pub(crate) use params;

/// Anything statements run on: a pooled connection (`deadpool_postgres`'s
/// `Object` or `ClientWrapper`), a plain `tokio_postgres::Client`, a
/// transaction or savepoint of either, or a reference to any of them.
pub trait Connection: Sync {
    type Client: GenericClient + Sync;

    /// The tokio-postgres client or transaction underneath.
    fn client(&self) -> &Self::Client;
}

impl Connection for tokio_postgres::Client {
    type Client = Self;
    fn client(&self) -> &Self {
        self
    }
}

impl Connection for tokio_postgres::Transaction<'_> {
    type Client = Self;
    fn client(&self) -> &Self {
        self
    }
}

impl Connection for deadpool_postgres::ClientWrapper {
    type Client = tokio_postgres::Client;
    fn client(&self) -> &tokio_postgres::Client {
        self
    }
}

impl Connection for deadpool_postgres::Client {
    type Client = tokio_postgres::Client;
    fn client(&self) -> &tokio_postgres::Client {
        self
    }
}

impl<'a> Connection for deadpool_postgres::Transaction<'a> {
    type Client = tokio_postgres::Transaction<'a>;
    fn client(&self) -> &tokio_postgres::Transaction<'a> {
        self
    }
}

impl<C: Connection + ?Sized> Connection for &C {
    type Client = C::Client;
    fn client(&self) -> &C::Client {
        (**self).client()
    }
}

impl<C: Connection + ?Sized> Connection for &mut C {
    type Client = C::Client;
    fn client(&self) -> &C::Client {
        (**self).client()
    }
}

/// Parameters with their types, as [`params!`] makes them.
pub type Params<'a> = [(&'a (dyn ToSql + Sync), Type)];

/// The rows of `sql`.
pub async fn query(
    client: &(impl Connection + ?Sized),
    sql: &str,
    params: &Params<'_>,
) -> Result<Vec<Row>, Error> {
    client.client().query_typed(sql, params).await
}

/// The one row of `sql`; an error (as tokio-postgres's `query_one`) when
/// it returns none or more.
pub async fn query_one(
    client: &(impl Connection + ?Sized),
    sql: &str,
    params: &Params<'_>,
) -> Result<Row, Error> {
    client.client().query_typed_one(sql, params).await
}

/// The row of `sql` if it returns one; an error when it returns more.
pub async fn query_opt(
    client: &(impl Connection + ?Sized),
    sql: &str,
    params: &Params<'_>,
) -> Result<Option<Row>, Error> {
    client.client().query_typed_opt(sql, params).await
}

/// Runs `sql`; the rows it affected (0 for a statement that reports none,
/// such as a `SELECT` of a function).
pub async fn execute(
    client: &(impl Connection + ?Sized),
    sql: &str,
    params: &Params<'_>,
) -> Result<u64, Error> {
    client.client().execute_typed(sql, params).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the parameter would send is what it says it is.
    fn accepted<T: PgParam>() -> Type {
        let ty = T::pg_type();
        assert!(
            T::accepts(&ty),
            "{} does not take {ty}",
            std::any::type_name::<T>()
        );
        ty
    }

    #[test]
    fn scalars_take_their_own_type() {
        assert_eq!(accepted::<bool>(), Type::BOOL);
        assert_eq!(accepted::<i16>(), Type::INT2);
        assert_eq!(accepted::<i32>(), Type::INT4);
        assert_eq!(accepted::<i64>(), Type::INT8);
        assert_eq!(accepted::<f32>(), Type::FLOAT4);
        assert_eq!(accepted::<f64>(), Type::FLOAT8);
        assert_eq!(accepted::<&str>(), Type::TEXT);
        assert_eq!(accepted::<String>(), Type::TEXT);
        assert_eq!(accepted::<Box<str>>(), Type::TEXT);
        assert_eq!(accepted::<Vec<u8>>(), Type::BYTEA);
        assert_eq!(accepted::<&[u8]>(), Type::BYTEA);
        assert_eq!(accepted::<serde_json::Value>(), Type::JSONB);
        assert_eq!(accepted::<Json<Vec<i32>>>(), Type::JSONB);
        assert_eq!(accepted::<SystemTime>(), Type::TIMESTAMPTZ);
        assert_eq!(accepted::<IpAddr>(), Type::INET);
    }

    #[test]
    fn options_and_references_take_the_value_type() {
        assert_eq!(accepted::<Option<i64>>(), Type::INT8);
        assert_eq!(accepted::<Option<&str>>(), Type::TEXT);
        assert_eq!(accepted::<&String>(), Type::TEXT);
        assert_eq!(accepted::<&&str>(), Type::TEXT);
        assert_eq!(accepted::<&Option<String>>(), Type::TEXT);
    }

    #[test]
    fn arrays_take_the_array_type() {
        assert_eq!(accepted::<Vec<i64>>(), Type::INT8_ARRAY);
        assert_eq!(accepted::<Vec<i32>>(), Type::INT4_ARRAY);
        assert_eq!(accepted::<&[i64]>(), Type::INT8_ARRAY);
        assert_eq!(accepted::<Vec<&str>>(), Type::TEXT_ARRAY);
        assert_eq!(accepted::<Vec<String>>(), Type::TEXT_ARRAY);
        assert_eq!(accepted::<Vec<Option<String>>>(), Type::TEXT_ARRAY);
        assert_eq!(accepted::<Vec<f64>>(), Type::FLOAT8_ARRAY);
        assert_eq!(accepted::<Vec<f32>>(), Type::FLOAT4_ARRAY);
        assert_eq!(accepted::<Vec<bool>>(), Type::BOOL_ARRAY);
        assert_eq!(accepted::<Vec<Vec<u8>>>(), Type::BYTEA_ARRAY);
        assert_eq!(accepted::<Vec<serde_json::Value>>(), Type::JSONB_ARRAY);
        assert_eq!(
            accepted::<Vec<Option<serde_json::Value>>>(),
            Type::JSONB_ARRAY
        );
        assert_eq!(accepted::<Vec<SystemTime>>(), Type::TIMESTAMPTZ_ARRAY);
        assert_eq!(accepted::<&Vec<i64>>(), Type::INT8_ARRAY);
    }

    #[test]
    fn params_pair_each_value_with_its_type() {
        let id = 7i64;
        let name = String::from("a");
        let ids = vec![1i64, 2];
        let none: Option<&str> = None;
        // Used within the statement, as a call's argument is: the
        // references `&name` and `1.5` make live until its end.
        let types: Vec<Type> = params![id, &name, &ids, none, 1.5f64]
            .iter()
            .map(|(_, t)| t.clone())
            .collect();
        assert_eq!(
            types,
            [
                Type::INT8,
                Type::TEXT,
                Type::INT8_ARRAY,
                Type::TEXT,
                Type::FLOAT8
            ]
        );
        let empty: [(&(dyn ToSql + Sync), Type); 0] = params![];
        assert!(empty.is_empty());
    }
}
