-- installed_by is TEXT (SPEC §7): an app token's user (`sub`) is a Zitadel id, a numeric
-- string. The table made by 0001 declares TEXT already, but a table made by hand before
-- the sidecar took over may declare `installed_by UUID`, which in SQLite has NUMERIC
-- affinity: a numeric id would be stored as an integer and no longer read back as the
-- text it was. SQLite cannot change a column's type, so the table is rebuilt: create the
-- new one, copy every row, drop the old, rename. sqlx runs the whole file in one
-- transaction: it all happens or none of it does.

-- The rebuild keeps the columns of SPEC §7 only. A hand-made table with more columns
-- would lose them, so the migration refuses it (the constraint's name is the message).
CREATE TEMP TABLE jtl_tenants_0002_guard (
    extra_columns INTEGER
        CONSTRAINT jtl_tenants_has_columns_beyond_spec_so_it_cannot_be_rebuilt_safely
        CHECK (extra_columns = 0)
);
INSERT INTO jtl_tenants_0002_guard
    SELECT COUNT(*) FROM pragma_table_info('jtl_tenants')
    WHERE name NOT IN ('tenant_id', 'tenant_slug', 'installed_at', 'installed_by', 'updated_at');
DROP TABLE jtl_tenants_0002_guard;

CREATE TABLE jtl_tenants_0002 (
    tenant_id    TEXT PRIMARY KEY NOT NULL,
    tenant_slug  TEXT NOT NULL,
    installed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    installed_by TEXT NOT NULL,
    updated_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
INSERT INTO jtl_tenants_0002 (tenant_id, tenant_slug, installed_at, installed_by, updated_at)
    SELECT CAST(tenant_id AS TEXT), tenant_slug, installed_at, CAST(installed_by AS TEXT),
           updated_at
    FROM jtl_tenants;
DROP TABLE jtl_tenants;
ALTER TABLE jtl_tenants_0002 RENAME TO jtl_tenants;
