-- installed_by becomes TEXT (SPEC §7): an app token's user (`sub`) is a Zitadel id, a
-- numeric string, which a UUID column cannot hold. The table is changed in place and its
-- rows are kept; existing UUIDs become their canonical lowercase text, the form the
-- session-token flow stores from now on. On a table whose column is TEXT already (one
-- made by hand), this changes nothing.
ALTER TABLE jtl_tenants ALTER COLUMN installed_by TYPE TEXT USING installed_by::text;
