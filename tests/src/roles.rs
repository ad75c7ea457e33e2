//! Login roles for attack tests: each granted an smsbus role, named after
//! the test's database (roles are cluster-wide) and dropped after it.

use tokio_postgres::Client;

use crate::db::{base_conninfo, connect_to, TestDb};

/// The login roles a test made.
#[derive(Default)]
pub struct LoginRoles {
    names: Vec<String>,
}

impl LoginRoles {
    /// Makes login role `<database>_<suffix>`, member of `role`, and returns
    /// its name.
    pub async fn create(&mut self, db: &TestDb, suffix: &str, role: &str) -> String {
        let name = format!("{}_{suffix}", db.name);
        db.connect()
            .await
            .batch_execute(&format!("CREATE ROLE \"{name}\" LOGIN IN ROLE {role}"))
            .await
            .unwrap_or_else(|e| panic!("creating role {name}: {e}"));
        self.names.push(name.clone());
        name
    }

    /// A role made by [`LoginRoles::create`] and a connection as it.
    pub async fn login(&mut self, db: &TestDb, suffix: &str, role: &str) -> (String, Client) {
        let name = self.create(db, suffix, role).await;
        let client = connect_to(&conninfo_as(db, &name)).await;
        (name, client)
    }

    /// Drops the database first (the roles may own objects in it), then
    /// the roles.
    pub async fn remove(self, db: TestDb) {
        drop(db);
        let c = connect_to(&format!("{} dbname=postgres", base_conninfo())).await;
        for name in self.names {
            c.batch_execute(&format!("DROP ROLE \"{name}\""))
                .await
                .unwrap_or_else(|e| panic!("dropping role {name}: {e}"));
        }
    }
}

/// The connection string of `db` for login role `name`.
pub fn conninfo_as(db: &TestDb, name: &str) -> String {
    format!("{} user={name}", db.conninfo())
}
