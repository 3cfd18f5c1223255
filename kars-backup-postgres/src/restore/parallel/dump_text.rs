//! Reading pg_dump's plain SQL: its entry comments (`-- Name: …; Type: …`), `COPY` lines,
//! header settings and the `SET`s that later entries depend on.

/// The table an `INDEX` or `CONSTRAINT` entry's statement is on (`ALTER TABLE ONLY t …`,
/// `CREATE [UNIQUE] INDEX i ON [ONLY] t …`), as the dump writes it.
pub(crate) fn entry_table(body: &str) -> Option<String> {
    let statement = body
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("--") && !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let token = |rest: &str| rest.split_whitespace().next().map(str::to_string);
    if let Some(rest) = statement
        .strip_prefix("ALTER TABLE ONLY ")
        .or_else(|| statement.strip_prefix("ALTER TABLE "))
    {
        return token(rest);
    }
    if statement.starts_with("CREATE INDEX ") || statement.starts_with("CREATE UNIQUE INDEX ") {
        let at = statement.find(" ON ")?;
        let rest = &statement[at + 4..];
        return token(rest.strip_prefix("ONLY ").unwrap_or(rest));
    }
    None
}

/// `SET` and `set_config` lines of the dump's header, for the loading connections.
pub(crate) fn header_settings(header: &[u8]) -> String {
    String::from_utf8_lossy(header)
        .lines()
        .filter(|l| l.starts_with("SET ") || l.starts_with("SELECT pg_catalog.set_config("))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The type and the `schema.table` (plain names only) of an entry comment line.
pub(crate) fn entry_of(line: &[u8]) -> Option<(String, Option<String>)> {
    let rest = line
        .strip_prefix(b"-- Name: ")
        .or_else(|| line.strip_prefix(b"-- Data for Name: "))?;
    let rest = std::str::from_utf8(rest).ok()?.trim_end();
    let mut parts = rest.split("; ");
    let name = parts.next()?;
    let kind = parts.next()?.strip_prefix("Type: ")?.to_string();
    let schema = parts.next().and_then(|s| s.strip_prefix("Schema: "));
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !s.as_bytes()[0].is_ascii_digit()
    };
    let qualified = match schema {
        Some(schema) if plain(name) && plain(schema) => Some(format!("{schema}.{name}")),
        _ => None,
    };
    Some((kind, qualified))
}

/// The target of `COPY target (cols) FROM stdin;`.
pub(crate) fn copy_target(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("COPY ")?;
    let end = rest.find([' ', '(']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// `SET default_tablespace = '';` → (`default_tablespace`, the line).
pub(crate) fn tracked_set(line: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(line).ok()?.trim_end();
    let rest = text.strip_prefix("SET ")?;
    let name = rest.split(" = ").next()?;
    matches!(
        name,
        "default_tablespace" | "default_table_access_method" | "default_with_oids"
    )
    .then(|| (name.to_string(), text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_recognised() {
        assert_eq!(
            entry_of(b"-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: o\n"),
            Some(("TABLE DATA".into(), Some("public.t".into())))
        );
        assert_eq!(
            entry_of(b"-- Name: t_pkey; Type: CONSTRAINT; Schema: s1; Owner: o\n"),
            Some(("CONSTRAINT".into(), Some("s1.t_pkey".into())))
        );
        assert_eq!(
            entry_of(b"-- Name: Q; Type: TABLE DATA; Schema: public; Owner: o\n"),
            Some(("TABLE DATA".into(), None))
        );
        assert_eq!(entry_of(b"-- PostgreSQL database dump\n"), None);
        assert_eq!(
            copy_target("COPY public.t (a, b) FROM stdin;"),
            Some("public.t")
        );
        assert_eq!(copy_target("COPY s.e FROM stdin;"), Some("s.e"));
        assert_eq!(
            tracked_set(b"SET default_tablespace = '';\n"),
            Some((
                "default_tablespace".into(),
                "SET default_tablespace = '';".into()
            ))
        );
        assert_eq!(tracked_set(b"SET search_path = x;\n"), None);
    }

    #[test]
    fn index_entries_name_their_table() {
        assert_eq!(
            entry_table(
                "--\n\nALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id);\n"
            ),
            Some("public.t".into())
        );
        assert_eq!(
            entry_table("CREATE UNIQUE INDEX i ON ONLY public.p USING btree (a);\n"),
            Some("public.p".into())
        );
        assert_eq!(
            entry_table("CREATE INDEX i ON \"Sales\".\"Orders\" USING btree (a);\n"),
            Some("\"Sales\".\"Orders\"".into())
        );
        assert_eq!(entry_table("COMMENT ON INDEX i IS 'x';\n"), None);
    }

    #[test]
    fn header_settings_keep_only_settings() {
        let h = b"--\n-- PostgreSQL database dump\n--\n\\restrict abc\nSET a = 1;\nSELECT pg_catalog.set_config('search_path', '', false);\n\n";
        assert_eq!(
            header_settings(h),
            "SET a = 1;\nSELECT pg_catalog.set_config('search_path', '', false);\n"
        );
    }
}
