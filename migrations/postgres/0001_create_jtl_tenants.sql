-- The tenants that connected the app (SPEC §7). IF NOT EXISTS: a table created by hand
-- before the sidecar took over (JTL's guide shows the same one) is kept as it is.
CREATE TABLE IF NOT EXISTS jtl_tenants (
    tenant_id    UUID PRIMARY KEY,
    tenant_slug  TEXT NOT NULL,
    installed_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    installed_by UUID NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
