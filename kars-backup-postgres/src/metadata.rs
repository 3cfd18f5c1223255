//! What the manifest says about a database, read over tokio-postgres: server version, size,
//! encoding, and the tables with exact row counts, all inside one snapshot.

use kars_backup_core::{DatabaseInfo, TableInfo};
use tokio_postgres::Client;

use crate::conn::quote_literal;
use crate::error::{Error, Result};

/// The server's version, as text (`15.4`) and number (`150004`).
#[derive(Debug, Clone)]
pub(crate) struct ServerVersion {
    pub(crate) text: String,
    pub(crate) num: u32,
}

/// Reads the server's version.
pub(crate) async fn server_version(client: &Client, target: &str) -> Result<ServerVersion> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int4",
            &[],
        )
        .await
        .map_err(|e| Error::query("read the server version", target, &e))?;
    let text: String = row.get(0);
    let num: i32 = row.get(1);
    // `15.4 (Debian 15.4-1.pgdg120+1)` → `15.4`.
    let text = text.split_whitespace().next().unwrap_or("").to_string();
    Ok(ServerVersion {
        text,
        num: num.max(0) as u32,
    })
}

/// A table selection like `pg_dump --table/--exclude-table`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selection {
    pub(crate) include: Vec<String>,
    pub(crate) exclude: Vec<String>,
}

/// One pattern turned into regexes on schema and name (psql's rules: unquoted letters fold to
/// lower case, `*` and `?` are wildcards, `.` separates the schema, `"…"` quotes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PatternRegex {
    pub(crate) schema: Option<String>,
    pub(crate) name: String,
}

pub(crate) fn pattern_regex(pattern: &str) -> PatternRegex {
    let mut parts: Vec<String> = vec![String::new()];
    let mut in_quotes = false;
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        let cur = parts.last_mut().expect("one part at least");
        match c {
            '"' if in_quotes && chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            '"' => in_quotes = !in_quotes,
            '.' if !in_quotes => parts.push(String::new()),
            '*' if !in_quotes => cur.push_str(".*"),
            '?' if !in_quotes => cur.push('.'),
            c => {
                let c = if in_quotes { c } else { c.to_ascii_lowercase() };
                if c.is_ascii_alphanumeric() || c == '_' || !c.is_ascii() {
                    cur.push(c);
                } else {
                    cur.push('\\');
                    cur.push(c);
                }
            }
        }
    }
    let anchored = |s: &str| format!("^({s})$");
    let name = parts.pop().expect("one part at least");
    let schema = parts.pop();
    PatternRegex {
        schema: schema.map(|s| anchored(&s)),
        name: anchored(&name),
    }
}

fn selection_sql(patterns: &[String]) -> String {
    patterns
        .iter()
        .map(|p| {
            let r = pattern_regex(p);
            match r.schema {
                Some(s) => format!(
                    "(n.nspname ~ {} AND c.relname ~ {})",
                    quote_literal(&s),
                    quote_literal(&r.name)
                ),
                None => format!(
                    "(c.relname ~ {} AND pg_catalog.pg_table_is_visible(c.oid))",
                    quote_literal(&r.name)
                ),
            }
        })
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// The user tables (ordinary tables and partitions; not those of extensions), schema-qualified
/// and quoted as SQL identifiers, sorted, limited to a selection.
pub(crate) async fn list_tables(
    client: &Client,
    selection: &Selection,
    target: &str,
) -> Result<Vec<String>> {
    let mut sql = String::from(
        "SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname)
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind = 'r' AND c.relpersistence <> 't'
           AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
           AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                           WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                             AND d.objid = c.oid AND d.deptype = 'e')",
    );
    if !selection.include.is_empty() {
        sql.push_str(&format!(" AND ({})", selection_sql(&selection.include)));
    }
    if !selection.exclude.is_empty() {
        sql.push_str(&format!(" AND NOT ({})", selection_sql(&selection.exclude)));
    }
    sql.push_str(" ORDER BY n.nspname, c.relname");
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(|e| Error::query("list the tables", target, &e))?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

/// Exact row counts of the tables (each counted `FROM ONLY`, so partitions and inheritance
/// children are not counted twice).
pub(crate) async fn count_rows(
    client: &Client,
    tables: &[String],
    target: &str,
) -> Result<Vec<TableInfo>> {
    let mut out = Vec::with_capacity(tables.len());
    for t in tables {
        let row = client
            .query_one(&format!("SELECT count(*) FROM ONLY {t}"), &[])
            .await
            .map_err(|e| Error::query(format!("count the rows of {t}"), target, &e))?;
        let n: i64 = row.get(0);
        out.push(TableInfo {
            name: t.clone(),
            rows: n.max(0) as u64,
        });
    }
    Ok(out)
}

/// Name, size, encoding and collation of the connected database.
pub(crate) async fn database_info(
    client: &Client,
    version: &ServerVersion,
    tables: Vec<TableInfo>,
    target: &str,
) -> Result<DatabaseInfo> {
    let row = client
        .query_one(
            "SELECT current_database(), pg_catalog.pg_database_size(current_database())::int8,
                    pg_catalog.pg_encoding_to_char(d.encoding), d.datcollate::text, d.datctype::text
             FROM pg_catalog.pg_database d WHERE d.datname = current_database()",
            &[],
        )
        .await
        .map_err(|e| Error::query("read the database's size", target, &e))?;
    let name: String = row.get(0);
    let size: i64 = row.get(1);
    let mut details = serde_json::Map::new();
    details.insert("server_version_num".into(), version.num.into());
    details.insert("encoding".into(), row.get::<_, String>(2).into());
    details.insert("lc_collate".into(), row.get::<_, String>(3).into());
    details.insert("lc_ctype".into(), row.get::<_, String>(4).into());
    details.insert("table_count".into(), tables.len().into());
    Ok(DatabaseInfo {
        name,
        engine_version: version.text.clone(),
        size_bytes: size.max(0) as u64,
        tables,
        integrity_check: None,
        details,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_follow_psql_rules() {
        assert_eq!(
            pattern_regex("users"),
            PatternRegex {
                schema: None,
                name: "^(users)$".into()
            }
        );
        assert_eq!(
            pattern_regex("Public.Asset*"),
            PatternRegex {
                schema: Some("^(public)$".into()),
                name: "^(asset.*)$".into()
            }
        );
        assert_eq!(
            pattern_regex("\"Sales\".\"Order.Lines\""),
            PatternRegex {
                schema: Some("^(Sales)$".into()),
                name: "^(Order\\.Lines)$".into()
            }
        );
        assert_eq!(pattern_regex("a?c").name, "^(a.c)$");
    }
}
