//! The KARS schema as the application creates it in SQLite: 20 tables, time columns as ISO-8601
//! text, the unique and foreign-key constraints of the reference (`assets.serial_number` and
//! `assets.asset_tag` unique, `assets.company_id` → `companies` ON DELETE RESTRICT, owner and
//! manager → `users` ON DELETE SET NULL, `companies.name` and `users.email` unique), and the
//! references of the attestation, passkey and token tables to their parents.

/// The 20 KARS tables, in creation order (parents first).
pub const TABLES: [&str; 20] = [
    "companies",
    "users",
    "asset_types",
    "assets",
    "audit_logs",
    "attestation_campaigns",
    "attestation_records",
    "attestation_assets",
    "attestation_new_assets",
    "attestation_pending_invites",
    "branding_settings",
    "email_templates",
    "hubspot_settings",
    "hubspot_sync_log",
    "oidc_settings",
    "passkey_settings",
    "passkeys",
    "password_reset_tokens",
    "smtp_settings",
    "system_settings",
];

/// The KARS schema (SQLite).
pub const SCHEMA: &str = r#"
CREATE TABLE companies (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT,
    created_date TEXT NOT NULL,
    hubspot_id TEXT,
    hubspot_synced_at TEXT
);
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT,
    name TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT 'employee' CHECK (role IN ('admin', 'manager', 'employee')),
    created_at TEXT NOT NULL,
    last_login TEXT,
    first_name TEXT,
    last_name TEXT,
    manager_name TEXT,
    manager_first_name TEXT,
    manager_last_name TEXT,
    manager_email TEXT,
    profile_image TEXT,
    oidc_sub TEXT,
    mfa_enabled INTEGER NOT NULL DEFAULT 0,
    mfa_secret TEXT,
    mfa_backup_codes TEXT,
    profile_complete INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE asset_types (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    description TEXT,
    is_active INTEGER NOT NULL DEFAULT 1,
    sort_order INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE assets (
    id INTEGER PRIMARY KEY,
    employee_first_name TEXT,
    employee_last_name TEXT,
    employee_email TEXT,
    owner_id INTEGER REFERENCES users(id) ON DELETE SET NULL,
    manager_first_name TEXT,
    manager_last_name TEXT,
    manager_email TEXT,
    manager_id INTEGER REFERENCES users(id) ON DELETE SET NULL,
    company_id INTEGER NOT NULL REFERENCES companies(id) ON DELETE RESTRICT,
    asset_type TEXT NOT NULL,
    make TEXT,
    model TEXT,
    serial_number TEXT NOT NULL UNIQUE,
    asset_tag TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL DEFAULT 'active',
    issued_date TEXT,
    returned_date TEXT,
    registration_date TEXT NOT NULL,
    last_updated TEXT NOT NULL,
    notes TEXT
);
CREATE TABLE audit_logs (
    id INTEGER PRIMARY KEY,
    action TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id INTEGER,
    entity_name TEXT,
    details TEXT,
    timestamp TEXT NOT NULL,
    user_email TEXT
);
CREATE TABLE attestation_campaigns (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT,
    start_date TEXT NOT NULL,
    end_date TEXT,
    status TEXT NOT NULL DEFAULT 'draft',
    reminder_days INTEGER,
    escalation_days INTEGER,
    target_type TEXT NOT NULL DEFAULT 'all',
    target_user_ids TEXT,
    target_company_ids TEXT,
    created_by INTEGER REFERENCES users(id) ON DELETE SET NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    unregistered_reminder_days INTEGER
);
CREATE TABLE attestation_records (
    id INTEGER PRIMARY KEY,
    campaign_id INTEGER NOT NULL REFERENCES attestation_campaigns(id) ON DELETE CASCADE,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    status TEXT NOT NULL DEFAULT 'pending',
    started_at TEXT,
    completed_at TEXT,
    reminder_sent_at TEXT,
    escalation_sent_at TEXT,
    notes TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE attestation_assets (
    id INTEGER PRIMARY KEY,
    attestation_record_id INTEGER NOT NULL REFERENCES attestation_records(id) ON DELETE CASCADE,
    asset_id INTEGER NOT NULL REFERENCES assets(id) ON DELETE CASCADE,
    attested_status TEXT,
    previous_status TEXT,
    notes TEXT,
    attested_at TEXT
);
CREATE TABLE attestation_new_assets (
    id INTEGER PRIMARY KEY,
    attestation_record_id INTEGER NOT NULL REFERENCES attestation_records(id) ON DELETE CASCADE,
    asset_type TEXT NOT NULL,
    make TEXT,
    model TEXT,
    serial_number TEXT,
    asset_tag TEXT,
    company_id INTEGER REFERENCES companies(id),
    notes TEXT,
    status TEXT,
    issued_date TEXT,
    returned_date TEXT,
    created_at TEXT NOT NULL,
    employee_first_name TEXT,
    employee_last_name TEXT,
    employee_email TEXT,
    manager_first_name TEXT,
    manager_last_name TEXT,
    manager_email TEXT
);
CREATE TABLE attestation_pending_invites (
    id INTEGER PRIMARY KEY,
    campaign_id INTEGER NOT NULL REFERENCES attestation_campaigns(id) ON DELETE CASCADE,
    employee_email TEXT NOT NULL,
    employee_first_name TEXT,
    employee_last_name TEXT,
    invite_token TEXT NOT NULL UNIQUE,
    invite_sent_at TEXT,
    reminder_sent_at TEXT,
    escalation_sent_at TEXT,
    registered_at TEXT,
    converted_record_id INTEGER REFERENCES attestation_records(id) ON DELETE SET NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE branding_settings (
    id INTEGER PRIMARY KEY,
    logo_data TEXT,
    logo_filename TEXT,
    logo_content_type TEXT,
    site_name TEXT,
    sub_title TEXT,
    favicon_data TEXT,
    favicon_filename TEXT,
    favicon_content_type TEXT,
    primary_color TEXT,
    include_logo_in_emails INTEGER NOT NULL DEFAULT 0,
    app_url TEXT,
    footer_label TEXT,
    updated_at TEXT,
    updated_by TEXT
);
CREATE TABLE email_templates (
    id INTEGER PRIMARY KEY,
    template_key TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    description TEXT,
    subject TEXT NOT NULL,
    html_body TEXT NOT NULL,
    text_body TEXT,
    variables TEXT,
    is_custom INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT,
    updated_by TEXT
);
CREATE TABLE hubspot_settings (
    id INTEGER PRIMARY KEY,
    enabled INTEGER NOT NULL DEFAULT 0,
    access_token TEXT,
    auto_sync_enabled INTEGER NOT NULL DEFAULT 0,
    sync_interval TEXT,
    last_sync TEXT,
    last_sync_status TEXT,
    companies_synced INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE hubspot_sync_log (
    id INTEGER PRIMARY KEY,
    sync_started_at TEXT NOT NULL,
    sync_completed_at TEXT,
    status TEXT NOT NULL,
    companies_found INTEGER NOT NULL DEFAULT 0,
    companies_created INTEGER NOT NULL DEFAULT 0,
    companies_updated INTEGER NOT NULL DEFAULT 0,
    error_message TEXT
);
CREATE TABLE oidc_settings (
    id INTEGER PRIMARY KEY,
    enabled INTEGER NOT NULL DEFAULT 0,
    issuer_url TEXT,
    client_id TEXT,
    client_secret TEXT,
    redirect_uri TEXT,
    scope TEXT,
    role_claim_path TEXT,
    default_role TEXT,
    sso_button_text TEXT,
    sso_button_help_text TEXT,
    sso_button_variant TEXT,
    updated_at TEXT,
    updated_by TEXT
);
CREATE TABLE passkey_settings (
    id INTEGER PRIMARY KEY,
    rp_id TEXT,
    rp_name TEXT,
    origin TEXT,
    enabled INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT,
    updated_by TEXT
);
CREATE TABLE passkeys (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name TEXT,
    credential_id TEXT NOT NULL UNIQUE,
    public_key TEXT NOT NULL,
    counter INTEGER NOT NULL DEFAULT 0,
    transports TEXT,
    created_at TEXT NOT NULL,
    last_used_at TEXT
);
CREATE TABLE password_reset_tokens (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    token TEXT NOT NULL UNIQUE,
    expires_at TEXT NOT NULL,
    used INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
CREATE TABLE smtp_settings (
    id INTEGER PRIMARY KEY,
    enabled INTEGER NOT NULL DEFAULT 0,
    host TEXT,
    port INTEGER,
    use_tls INTEGER NOT NULL DEFAULT 1,
    username TEXT,
    password_encrypted TEXT,
    auth_method TEXT,
    from_name TEXT,
    from_email TEXT,
    default_recipient TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE system_settings (
    id INTEGER PRIMARY KEY,
    trust_proxy INTEGER NOT NULL DEFAULT 0,
    proxy_type TEXT,
    proxy_trust_level INTEGER,
    rate_limit_enabled INTEGER NOT NULL DEFAULT 1,
    rate_limit_window_ms INTEGER,
    rate_limit_max_requests INTEGER,
    updated_at TEXT,
    updated_by TEXT
);
"#;
