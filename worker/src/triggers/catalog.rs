//! The enabled triggers, in the order they run.

use deadpool_postgres::Object;

use crate::statements;

#[derive(Clone, Debug)]
pub struct Trigger {
    pub id: i64,
    pub name: String,
    /// When the row last changed: a Lua state is kept while it is the same.
    pub version: String,
    /// None: every permanent status.
    pub on_status: Option<Vec<String>>,
    /// None: both directions.
    pub direction: Option<String>,
    pub condition: String,
    pub language: String,
    /// An SQL script cut into statements by the database's own parser.
    pub statements: Vec<String>,
    pub script: String,
    pub final_: bool,
}

impl Trigger {
    /// Whether this trigger is for a message with `status` and `direction`.
    pub fn applies(&self, status: &str, direction: &str) -> bool {
        self.direction.as_deref().is_none_or(|d| d == direction)
            && self
                .on_status
                .as_ref()
                .is_none_or(|s| s.iter().any(|s| s == status))
    }
}

pub async fn load(client: &Object) -> anyhow::Result<Vec<Trigger>> {
    let rows = statements::query(
        client,
        "SELECT id, name, updated_at::text, on_status::text[], direction, condition, language,
                CASE WHEN language = 'sql' THEN smsbus._split_sql_script(script) END, script, final
         FROM smsbus.trigger WHERE enabled ORDER BY position, id",
        &[],
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Trigger {
                id: r.try_get(0)?,
                name: r.try_get(1)?,
                version: r.try_get(2)?,
                on_status: r.try_get(3)?,
                direction: r.try_get(4)?,
                condition: r.try_get(5)?,
                language: r.try_get(6)?,
                statements: r.try_get::<_, Option<Vec<String>>>(7)?.unwrap_or_default(),
                script: r.try_get(8)?,
                final_: r.try_get(9)?,
            })
        })
        .collect()
}
