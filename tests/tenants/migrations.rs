//! Replicas migrating one store together, and migration 0002 (installed_by as TEXT).

use super::*;

on_both_stores!(replicas_opening_one_store_together_all_migrate_without_error);
async fn replicas_opening_one_store_together_all_migrate_without_error(db: TestDb) -> TestDb {
    let opened = futures_util::future::join_all((0..6).map(|_| async {
        let store = TenantStore::open(&db.url).await.unwrap();
        store.check().await.unwrap();
        store
    }))
    .await;
    assert!(opened.iter().all(TenantStore::is_reachable));
    let tenant = Uuid::parse_str(TENANT).unwrap();
    let user = USER;
    for store in &opened {
        store.upsert(tenant, "acme", user).await.unwrap();
    }
    assert_eq!(opened[0].count().await.unwrap(), 1);
    for store in opened {
        store.close().await;
    }
    db
}

// ---- installed_by becomes TEXT (migration 0002) ----------------------------------------

/// Every row of `jtl_tenants` as text, straight from the table: tenant, slug, user,
/// installed_at, updated_at.
async fn raw_rows(db: &TestDb) -> Vec<[String; 5]> {
    let sql = "SELECT CAST(tenant_id AS TEXT), tenant_slug, CAST(installed_by AS TEXT), \
               CAST(installed_at AS TEXT), CAST(updated_at AS TEXT) FROM jtl_tenants \
               ORDER BY tenant_id";
    type Row = (String, String, String, String, String);
    let rows: Vec<Row> = match &db.postgres {
        Some(_) => {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect(&db.url)
                .await
                .unwrap();
            let rows = sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
            pool.close().await;
            rows
        }
        None => {
            let pool = sqlite_pool(db).await;
            let rows = sqlx::query_as(sql).fetch_all(&pool).await.unwrap();
            pool.close().await;
            rows
        }
    };
    rows.into_iter()
        .map(|(a, b, c, d, e)| [a, b, c, d, e])
        .collect()
}

/// The declared type of `jtl_tenants.installed_by`, lowercase.
async fn installed_by_type(db: &TestDb) -> String {
    let kind: String = match &db.postgres {
        Some(_) => {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect(&db.url)
                .await
                .unwrap();
            let kind = sqlx::query_scalar(
                "SELECT data_type::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = 'jtl_tenants' \
                 AND column_name = 'installed_by'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            pool.close().await;
            kind
        }
        None => {
            let pool = sqlite_pool(db).await;
            let kind = sqlx::query_scalar(
                "SELECT type FROM pragma_table_info('jtl_tenants') WHERE name = 'installed_by'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            pool.close().await;
            kind
        }
    };
    kind.to_lowercase()
}

/// The store as the sidecar before migration 0002 left it: only the first migration
/// run (through sqlx, from the file as shipped, so its recorded checksum is the one the
/// new binary expects), with one tenant connected.
async fn store_of_the_first_migration(db: &TestDb) {
    let kind = if db.postgres.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    let dir = tempfile::tempdir().unwrap();
    let name = "0001_create_jtl_tenants.sql";
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(kind)
            .join(name),
        dir.path().join(name),
    )
    .unwrap();
    let migrator = sqlx::migrate::Migrator::new(dir.path()).await.unwrap();
    assert_eq!(migrator.iter().count(), 1);
    match &db.postgres {
        Some(_) => {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .connect(&db.url)
                .await
                .unwrap();
            migrator.run(&pool).await.unwrap();
            pool.close().await;
        }
        None => {
            let pool = sqlite_pool(db).await;
            migrator.run(&pool).await.unwrap();
            pool.close().await;
        }
    }
    execute(
        db,
        &format!(
            "INSERT INTO jtl_tenants (tenant_id, tenant_slug, installed_by) \
             VALUES ('{TENANT}', 'acme', '{USER}')"
        ),
    )
    .await;
}

/// A Zitadel user id (an app token's `sub`): a numeric string, not a UUID.
const ZITADEL_USER: &str = "312909075212468632";
const OTHER_TENANT: &str = "0b1c2d3e-4f50-4617-8283-94a5b6c7d8e9";

on_both_stores!(a_store_of_the_first_migration_is_migrated_in_place_keeping_its_rows);
async fn a_store_of_the_first_migration_is_migrated_in_place_keeping_its_rows(
    db: TestDb,
) -> TestDb {
    store_of_the_first_migration(&db).await;
    let before = raw_rows(&db).await;
    assert_eq!(before.len(), 1);

    // Opened by the new code: migrated, the row as it was.
    let (count, after) = stored(&db).await;
    assert_eq!(installed_by_type(&db).await, "text");
    assert_eq!(count, 1, "rows lost by the migration");
    assert_eq!(raw_rows(&db).await, before);
    let after = after.unwrap();
    assert_eq!(after.tenant_slug, "acme");
    assert_eq!(after.installed_by, USER);

    // A user that is no UUID can be stored now, on a new row and on the old one.
    let store = db.store().await;
    let other = Uuid::parse_str(OTHER_TENANT).unwrap();
    store.upsert(other, "", ZITADEL_USER).await.unwrap();
    assert_eq!(
        store.tenant(other).await.unwrap().unwrap().installed_by,
        ZITADEL_USER
    );
    let tenant = Uuid::parse_str(TENANT).unwrap();
    store.upsert(tenant, "acme", ZITADEL_USER).await.unwrap();
    let updated = store.tenant(tenant).await.unwrap().unwrap();
    assert_eq!(updated.installed_by, ZITADEL_USER);
    assert_eq!(updated.installed_at, after.installed_at);
    assert_eq!(store.count().await.unwrap(), 2);
    store.close().await;
    db
}

on_both_stores!(the_first_migration_alone_declares_installed_by_as_before);
/// The baseline of the test above: what 0001 made is what 0002 changes.
async fn the_first_migration_alone_declares_installed_by_as_before(db: TestDb) -> TestDb {
    store_of_the_first_migration(&db).await;
    let expected = if db.postgres.is_some() {
        "uuid"
    } else {
        "text"
    };
    assert_eq!(installed_by_type(&db).await, expected);
    db
}

#[tokio::test]
async fn a_hand_made_sqlite_table_declaring_uuid_is_rebuilt_so_numeric_users_stay_text() {
    // JTL's guide declares `installed_by UUID`; in SQLite that is NUMERIC affinity, which
    // would turn "312909075212468632" into an integer. The rebuild makes the column TEXT.
    let db = TestDb::sqlite();
    execute(
        &db,
        &format!(
            "CREATE TABLE jtl_tenants (tenant_id UUID PRIMARY KEY, tenant_slug TEXT NOT NULL, \
             installed_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP, \
             installed_by UUID NOT NULL, updated_at TIMESTAMPTZ NOT NULL DEFAULT CURRENT_TIMESTAMP); \
             INSERT INTO jtl_tenants (tenant_id, tenant_slug, installed_at, installed_by, updated_at) \
             VALUES ('{TENANT}', 'acme', '2026-01-02T03:04:05.678Z', '{USER}', '2026-01-02T03:04:05.678Z');"
        ),
    )
    .await;
    assert_eq!(installed_by_type(&db).await, "uuid");

    let store = db.store().await;
    assert_eq!(installed_by_type(&db).await, "text");
    let tenant = store
        .tenant(Uuid::parse_str(TENANT).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tenant.installed_by, USER);
    assert_eq!(tenant.installed_at, "2026-01-02T03:04:05.678Z");
    let other = Uuid::parse_str(OTHER_TENANT).unwrap();
    store.upsert(other, "", ZITADEL_USER).await.unwrap();
    assert_eq!(
        store.tenant(other).await.unwrap().unwrap().installed_by,
        ZITADEL_USER
    );
    store.close().await;
}

#[tokio::test]
async fn a_hand_made_sqlite_table_with_more_columns_is_refused_and_left_as_it_was() {
    // The rebuild would drop a column the spec does not know: the migration refuses,
    // and its transaction leaves the table (rows and column) as it was.
    let db = TestDb::sqlite();
    execute(
        &db,
        &format!(
            "CREATE TABLE jtl_tenants (tenant_id TEXT PRIMARY KEY NOT NULL, \
             tenant_slug TEXT NOT NULL, installed_at TEXT NOT NULL DEFAULT '', \
             installed_by TEXT NOT NULL, updated_at TEXT NOT NULL DEFAULT '', plan TEXT); \
             INSERT INTO jtl_tenants (tenant_id, tenant_slug, installed_by, plan) \
             VALUES ('{TENANT}', 'acme', '{USER}', 'gold');"
        ),
    )
    .await;
    let error = match TenantStore::open(&db.url).await {
        Ok(_) => panic!("a table with more columns was migrated"),
        Err(error) => error,
    };
    let text = format!("{error}: {:?}", std::error::Error::source(&error));
    assert!(
        text.contains("jtl_tenants_has_columns_beyond_spec_so_it_cannot_be_rebuilt_safely"),
        "{text}"
    );
    let pool = sqlite_pool(&db).await;
    let plan: String = sqlx::query_scalar("SELECT plan FROM jtl_tenants")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(plan, "gold");
    pool.close().await;
}
