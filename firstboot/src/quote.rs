//! Quoting for the files the agent writes, each by its consumer's rules.
//! Values are checked against their consumer's grammar first
//! (`nodebake_contract::grammar`); quoting here is what keeps a file
//! well-formed whatever a value holds.

/// `s` as a TOML basic string, by the TOML serializer (quotes,
/// backslashes and control characters escaped): a value cannot end the
/// string or add a key or table.
pub fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// `s` as one word of a systemd `Exec*=` command line: `%` doubled
/// (specifiers), `$` doubled (variable expansion), and anything beyond
/// plain path characters in double quotes with C escapes, so the word
/// reaches the program as it is (systemd.service(5), "Command lines").
pub fn systemd_exec_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'.' | b'_' | b'/' | b':' | b'@' | b'+' | b'=' | b',' | b'-'
                )
        });
    if plain {
        return s.to_string();
    }
    if s == ";" {
        // A lone `;` separates commands, quoted or not.
        return "\\;".to_string();
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_strings_round_trip() {
        for s in [
            "registry.k8s.io/pause:3.9",
            "a\"b",
            "a\\",
            "x\"]\n[evil]\ny = \"",
            "\u{7}",
        ] {
            let doc = format!("k = {}\n", toml_string(s));
            let v: toml::Table = toml::from_str(&doc).unwrap_or_else(|e| panic!("{doc}: {e}"));
            assert_eq!(v.len(), 1);
            assert_eq!(v["k"].as_str(), Some(s));
        }
    }

    #[test]
    fn systemd_words() {
        assert_eq!(systemd_exec_word("ens33"), "ens33");
        assert_eq!(systemd_exec_word("192.168.1.1/32"), "192.168.1.1/32");
        assert_eq!(systemd_exec_word("%h"), "\"%%h\"");
        assert_eq!(systemd_exec_word("$(reboot)"), "\"$$(reboot)\"");
        assert_eq!(systemd_exec_word("a b\"c\\"), "\"a b\\\"c\\\\\"");
        assert_eq!(systemd_exec_word(";"), "\\;");
        assert_eq!(systemd_exec_word("a\r\n"), "\"a\\x0d\\n\"");
        assert_eq!(systemd_exec_word(""), "\"\"");
    }
}
