-- The tenants that connected the app (SPEC §7). SQLite has no UUID or TIMESTAMPTZ type:
-- ids are canonical lowercase UUID text, times ISO 8601 UTC text with milliseconds
-- ("2026-09-21T10:00:00.123Z"), which SQLite's date functions read and which sort in
-- time order.
CREATE TABLE IF NOT EXISTS jtl_tenants (
    tenant_id    TEXT PRIMARY KEY NOT NULL,
    tenant_slug  TEXT NOT NULL,
    installed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    installed_by TEXT NOT NULL,
    updated_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
