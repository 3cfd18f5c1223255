//! The sample database is the real KARS: the reference's 20 tables with their columns and types
//! (`/work/shared/reference/kars-schema.md`, copied below), its constraints, rollback-journal
//! mode, fake secrets and base64 images, and data the `kars` checks accept.

use kars_backup_sqlite::sample::{SampleSize, create_kars_database};

/// Each table and its columns as the reference lists them (read from a database the KARS
/// application created).
const REFERENCE: &[(&str, &str)] = &[
    (
        "asset_types",
        "id integer, name text, display_name text, description text, is_active integer, sort_order integer, created_at text, updated_at text",
    ),
    (
        "assets",
        "id integer, employee_first_name text, employee_last_name text, employee_email text, owner_id integer, manager_first_name text, manager_last_name text, manager_email text, manager_id integer, company_id integer, asset_type text, make text, model text, serial_number text, asset_tag text, status text, issued_date text, returned_date text, registration_date text, last_updated text, notes text",
    ),
    (
        "attestation_assets",
        "id integer, attestation_record_id integer, asset_id integer, attested_status text, previous_status text, notes text, attested_at text",
    ),
    (
        "attestation_campaigns",
        "id integer, name text, description text, start_date text, end_date text, status text, reminder_days integer, escalation_days integer, target_type text, target_user_ids text, target_company_ids text, created_by integer, created_at text, updated_at text, unregistered_reminder_days integer",
    ),
    (
        "attestation_new_assets",
        "id integer, attestation_record_id integer, asset_type text, make text, model text, serial_number text, asset_tag text, company_id integer, notes text, status text, issued_date text, returned_date text, created_at text, employee_first_name text, employee_last_name text, employee_email text, manager_first_name text, manager_last_name text, manager_email text",
    ),
    (
        "attestation_pending_invites",
        "id integer, campaign_id integer, employee_email text, employee_first_name text, employee_last_name text, invite_token text, invite_sent_at text, reminder_sent_at text, escalation_sent_at text, registered_at text, converted_record_id integer, created_at text",
    ),
    (
        "attestation_records",
        "id integer, campaign_id integer, user_id integer, status text, started_at text, completed_at text, reminder_sent_at text, escalation_sent_at text, notes text, created_at text, updated_at text",
    ),
    (
        "audit_logs",
        "id integer, action text, entity_type text, entity_id integer, entity_name text, details text, timestamp text, user_email text",
    ),
    (
        "branding_settings",
        "id integer, logo_data text, logo_filename text, logo_content_type text, site_name text, sub_title text, favicon_data text, favicon_filename text, favicon_content_type text, primary_color text, include_logo_in_emails integer, app_url text, footer_label text, updated_at text, updated_by text",
    ),
    (
        "companies",
        "id integer, name text, description text, created_date text, hubspot_id text, hubspot_synced_at text",
    ),
    (
        "email_templates",
        "id integer, template_key text, name text, description text, subject text, html_body text, text_body text, variables text, is_custom integer, updated_at text, updated_by text",
    ),
    (
        "hubspot_settings",
        "id integer, enabled integer, access_token text, auto_sync_enabled integer, sync_interval text, last_sync text, last_sync_status text, companies_synced integer, created_at text, updated_at text",
    ),
    (
        "hubspot_sync_log",
        "id integer, sync_started_at text, sync_completed_at text, status text, companies_found integer, companies_created integer, companies_updated integer, error_message text",
    ),
    (
        "oidc_settings",
        "id integer, enabled integer, issuer_url text, client_id text, client_secret text, redirect_uri text, scope text, role_claim_path text, default_role text, sso_button_text text, sso_button_help_text text, sso_button_variant text, updated_at text, updated_by text",
    ),
    (
        "passkey_settings",
        "id integer, rp_id text, rp_name text, origin text, enabled integer, updated_at text, updated_by text",
    ),
    (
        "passkeys",
        "id integer, user_id integer, name text, credential_id text, public_key text, counter integer, transports text, created_at text, last_used_at text",
    ),
    (
        "password_reset_tokens",
        "id integer, user_id integer, token text, expires_at text, used integer, created_at text",
    ),
    (
        "smtp_settings",
        "id integer, enabled integer, host text, port integer, use_tls integer, username text, password_encrypted text, auth_method text, from_name text, from_email text, default_recipient text, created_at text, updated_at text",
    ),
    (
        "system_settings",
        "id integer, trust_proxy integer, proxy_type text, proxy_trust_level integer, rate_limit_enabled integer, rate_limit_window_ms integer, rate_limit_max_requests integer, updated_at text, updated_by text",
    ),
    (
        "users",
        "id integer, email text, password_hash text, name text, role text, created_at text, last_login text, first_name text, last_name text, manager_name text, manager_first_name text, manager_last_name text, manager_email text, profile_image text, oidc_sub text, mfa_enabled integer, mfa_secret text, mfa_backup_codes text, profile_complete integer",
    ),
];

fn open_sample() -> (tempfile::TempDir, rusqlite::Connection) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("assets.db");
    create_kars_database(&db, SampleSize::demo()).unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    (dir, conn)
}

fn one<T: rusqlite::types::FromSql>(conn: &rusqlite::Connection, sql: &str) -> T {
    conn.query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[test]
fn the_sample_has_the_20_kars_tables_with_their_columns() {
    let (_dir, conn) = open_sample();
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap();
    let tables: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let expected: Vec<&str> = REFERENCE.iter().map(|(t, _)| *t).collect();
    assert_eq!(tables, expected);
    assert_eq!(tables.len(), 20);
    for (table, columns) in REFERENCE {
        let mut stmt = conn
            .prepare(&format!(
                "SELECT name, lower(type) FROM pragma_table_info('{table}') ORDER BY cid"
            ))
            .unwrap();
        let found: Vec<String> = stmt
            .query_map([], |r| {
                Ok(format!(
                    "{} {}",
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?
                ))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(found.join(", "), *columns, "columns of {table}");
        let rows: i64 = one(&conn, &format!("SELECT count(*) FROM {table}"));
        assert!(rows >= 1, "{table} has rows");
    }
}

#[test]
fn the_sample_keeps_the_kars_constraints_and_journal_mode() {
    let (_dir, conn) = open_sample();
    let mode: String = one(&conn, "PRAGMA journal_mode");
    assert_eq!(mode, "delete", "KARS never switches to WAL");
    // Unique serial numbers and asset tags, also enforced by the schema.
    for column in ["serial_number", "asset_tag"] {
        let dupes: i64 = one(
            &conn,
            &format!(
                "SELECT count(*) FROM (SELECT {column} FROM assets GROUP BY {column} HAVING count(*) > 1)"
            ),
        );
        assert_eq!(dupes, 0, "{column}");
        let err = conn
            .execute(
                &format!("UPDATE assets SET {column} = (SELECT {column} FROM assets WHERE id = 1) WHERE id = 2"),
                [],
            )
            .unwrap_err();
        assert!(err.to_string().contains("UNIQUE"), "{column}: {err}");
    }
    // Every foreign key holds, and the declared ones are there.
    conn.execute_batch("PRAGMA foreign_keys = ON").unwrap();
    let broken: i64 = one(&conn, "SELECT count(*) FROM pragma_foreign_key_check");
    assert_eq!(broken, 0);
    let fk = |table: &str, from: &str| -> (String, String) {
        conn.query_row(
            &format!("SELECT \"table\", on_delete FROM pragma_foreign_key_list('{table}') WHERE \"from\" = '{from}'"),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap_or_else(|e| panic!("{table}.{from}: {e}"))
    };
    assert_eq!(
        fk("assets", "company_id"),
        ("companies".into(), "RESTRICT".into())
    );
    assert_eq!(
        fk("assets", "owner_id"),
        ("users".into(), "SET NULL".into())
    );
    assert_eq!(
        fk("assets", "manager_id"),
        ("users".into(), "SET NULL".into())
    );
    let in_use = conn.execute(
        "DELETE FROM companies WHERE id = (SELECT company_id FROM assets LIMIT 1)",
        [],
    );
    assert!(in_use.is_err(), "a company with assets cannot be deleted");
    for (table, column) in [("companies", "name"), ("users", "email")] {
        let unique: i64 = one(
            &conn,
            &format!(
                "SELECT count(*) FROM pragma_index_list('{table}') il JOIN pragma_index_info(il.name) ii WHERE il.\"unique\" = 1 AND ii.name = '{column}'"
            ),
        );
        assert_eq!(unique, 1, "{table}.{column} is unique");
    }
}

#[test]
fn the_sample_holds_fake_secrets_images_and_a_fresh_audit_log() {
    let (_dir, conn) = open_sample();
    let admins: i64 = one(&conn, "SELECT count(*) FROM users WHERE role = 'admin'");
    assert!(admins >= 1);
    let first: String = one(&conn, "SELECT role FROM users WHERE id = 1");
    assert_eq!(first, "admin", "the first registered user is the admin");
    let roles: i64 = one(
        &conn,
        "SELECT count(*) FROM users WHERE role NOT IN ('admin', 'manager', 'employee')",
    );
    assert_eq!(roles, 0);
    let hash: String = one(
        &conn,
        "SELECT password_hash FROM users WHERE password_hash IS NOT NULL LIMIT 1",
    );
    assert!(hash.starts_with("$2b$10$") && hash.len() == 60, "{hash}");
    for (sql, what) in [
        (
            "SELECT count(*) FROM users WHERE mfa_secret IS NOT NULL AND mfa_backup_codes LIKE '[%'",
            "MFA secrets",
        ),
        (
            "SELECT count(*) FROM passkeys WHERE length(public_key) > 40",
            "passkeys",
        ),
        (
            "SELECT count(*) FROM password_reset_tokens WHERE length(token) = 64",
            "reset tokens",
        ),
        (
            "SELECT count(*) FROM oidc_settings WHERE length(client_secret) >= 32",
            "OIDC client secret",
        ),
        (
            "SELECT count(*) FROM smtp_settings WHERE length(password_encrypted) > 32",
            "SMTP password",
        ),
        (
            "SELECT count(*) FROM hubspot_settings WHERE access_token LIKE 'pat-%'",
            "HubSpot token",
        ),
        (
            "SELECT count(*) FROM attestation_pending_invites WHERE length(invite_token) = 64",
            "invite tokens",
        ),
    ] {
        let n: i64 = one(&conn, sql);
        assert!(n >= 1, "{what}: {sql}");
    }
    // The logo and favicon as base64 text, decodable and large.
    let logo: String = one(&conn, "SELECT logo_data FROM branding_settings");
    assert!(logo.len() > 50_000, "{}", logo.len());
    assert!(
        logo.len().is_multiple_of(4)
            && logo
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
    );
    assert!(logo.starts_with("iVBORw0KGgo"), "a PNG: {}", &logo[..16]);
    // Time columns are ISO-8601 text, and the newest audit entry is minutes old.
    let newest: String = one(&conn, "SELECT max(timestamp) FROM audit_logs");
    let t = chrono::DateTime::parse_from_rfc3339(&newest).unwrap();
    let age = chrono::Utc::now() - t.to_utc();
    assert!(
        age > chrono::Duration::zero() && age < chrono::Duration::minutes(10),
        "{newest}"
    );
    assert_eq!(newest.len(), "2026-12-05T09:30:18.123Z".len(), "{newest}");
}
