//! Reads as the caller. An account with a `db_role` has its requests'
//! reads run as that role (`SET LOCAL ROLE`, in a transaction of their
//! own), so the grants and row security policies written for the role
//! hold over HTTP as they hold in SQL: the API never shows more than the
//! role's own SQL would. Without one, reads run as the worker and every
//! statement names the key's account. The worker's login role must be a
//! member of each db_role (`GRANT <db_role> TO <worker's login>`).

use tokio_postgres::Row;

use super::auth::Caller;
use super::error::ApiError;
use super::Api;
use crate::statements::{self, params, Params};

impl Api {
    /// The rows of `sql`, read as `caller`; `failed` says what the
    /// database's refusal of the statement means to the client.
    pub async fn read_as(
        &self,
        caller: &Caller,
        sql: &str,
        params: &Params<'_>,
        failed: impl Fn(tokio_postgres::Error) -> ApiError,
    ) -> Result<Vec<Row>, ApiError> {
        let mut client = self.pool.get().await?;
        let Some(role) = &caller.db_role else {
            return statements::query(&client, sql, params)
                .await
                .map_err(failed);
        };
        let unavailable =
            |e: tokio_postgres::Error| ApiError::unavailable("cannot read as a db_role", &e);
        let transaction = client
            .build_transaction()
            .read_only(true)
            .start()
            .await
            .map_err(unavailable)?;
        statements::execute(
            &transaction,
            "SELECT set_config('role', $1, true)",
            &params![role],
        )
        .await
        .map_err(|e| {
            ApiError::unavailable(
                &format!(
                    "cannot become db_role {role:?} of account {:?} (is it granted to the worker's login role?)",
                    caller.account
                ),
                &e,
            )
        })?;
        let rows = statements::query(&transaction, sql, params)
            .await
            .map_err(failed)?;
        transaction.commit().await.map_err(unavailable)?;
        Ok(rows)
    }

    /// The first row of `sql` read as `caller`, if any; `what` names the
    /// read in the log when the database fails it.
    pub async fn read_one_as(
        &self,
        caller: &Caller,
        what: &str,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<Option<Row>, ApiError> {
        let rows = self
            .read_as(caller, sql, params, |e| ApiError::unavailable(what, &e))
            .await?;
        Ok(rows.into_iter().next())
    }
}
