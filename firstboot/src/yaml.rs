//! Block YAML for consumers that read YAML 1.1 (kubeadm and the kubelet
//! read through Go's `sigs.k8s.io/yaml`): `serde_yaml` writes the string
//! `y`, `on` or `1:20` plain, which YAML 1.1 reads as a bool or a number
//! (real kubeadm refused `heartbeat-interval: y` with "cannot unmarshal
//! bool into ... of type string"). Here a string is written plain only when
//! no YAML 1.1 or 1.2 resolver can read it as anything but that string;
//! every other one is double-quoted with JSON escapes (valid YAML).

use serde_yaml::Value;

/// `v` as a block YAML document (no leading `---`).
pub fn to_string(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Mapping(m) if !m.is_empty() => mapping(&mut out, m, 0),
        Value::Sequence(s) if !s.is_empty() => sequence(&mut out, s, 0),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

/// Words YAML 1.1 resolves to a bool or null (compared case-insensitively).
const SPECIAL_WORDS: &[&str] = &[
    "y", "n", "yes", "no", "true", "false", "on", "off", "null", "~",
];

/// Whether `s` reads back as this string from a plain scalar under YAML 1.1
/// and 1.2: it starts with a letter or `/`, holds only letters, digits,
/// `._/:@+=,()-` and inner spaces (never `: `), and is no bool/null word.
/// Numbers, timestamps, base-60 values and addresses (YAML 1.1's float
/// pattern takes `192.168.1.1`) start with a digit, sign or dot: quoted,
/// unless a letter shows it is none of them (`24h0m0s`).
pub fn plain_ok(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    // A leading digit is safe with a letter no number or timestamp
    // spelling holds (not a-f, o, t, x, z, which hex, octal, exponents
    // and timestamps use): `60s`, `24h0m0s`.
    let unnumeric = |c: char| c.is_ascii_alphabetic() && !"abcdefotxzABCDEFOTXZ".contains(c);
    let starts = first.is_ascii_alphabetic()
        || first == '/'
        || (first.is_ascii_digit() && s.chars().any(unnumeric));
    starts
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/:@+=,()- ".contains(c))
        && !s.ends_with(' ')
        && !s.contains(": ")
        && !SPECIAL_WORDS.iter().any(|w| w.eq_ignore_ascii_case(s))
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if plain_ok(s) => s.clone(),
        Value::String(s) => serde_json::to_string(s).expect("a string serialises"),
        Value::Mapping(m) if m.is_empty() => "{}".into(),
        Value::Sequence(s) if s.is_empty() => "[]".into(),
        Value::Tagged(t) => scalar(&t.value),
        Value::Mapping(_) | Value::Sequence(_) => unreachable!("collections are blocks"),
    }
}

fn is_block(v: &Value) -> bool {
    match v {
        Value::Mapping(m) => !m.is_empty(),
        Value::Sequence(s) => !s.is_empty(),
        _ => false,
    }
}

fn mapping(out: &mut String, m: &serde_yaml::Mapping, indent: usize) {
    for (k, v) in m {
        out.push_str(&" ".repeat(indent));
        out.push_str(&scalar(k));
        match v {
            Value::Mapping(inner) if !inner.is_empty() => {
                out.push_str(":\n");
                mapping(out, inner, indent + 2);
            }
            // A list under a key at the key's own indentation.
            Value::Sequence(items) if !items.is_empty() => {
                out.push_str(":\n");
                sequence(out, items, indent);
            }
            other => {
                out.push_str(": ");
                out.push_str(&scalar(other));
                out.push('\n');
            }
        }
    }
}

fn sequence(out: &mut String, items: &[Value], indent: usize) {
    for item in items {
        if is_block(item) {
            // The item's block one level in, its first line's indentation
            // replaced by the dash.
            let mut inner = String::new();
            match item {
                Value::Mapping(m) => mapping(&mut inner, m, indent + 2),
                Value::Sequence(s) => sequence(&mut inner, s, indent + 2),
                _ => unreachable!("a block"),
            }
            out.push_str(&" ".repeat(indent));
            out.push_str("- ");
            out.push_str(&inner[indent + 2..]);
        } else {
            out.push_str(&" ".repeat(indent));
            out.push_str("- ");
            out.push_str(&scalar(item));
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(v: &Value) {
        let text = to_string(v);
        let back: Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(&back, v, "{text}");
    }

    #[test]
    fn strings_yaml_1_1_would_misread_are_quoted() {
        for s in [
            "y",
            "Y",
            "n",
            "NO",
            "yes",
            "On",
            "off",
            "true",
            "False",
            "null",
            "~",
            "1:20",
            "0777",
            "1e3",
            "0x1f",
            "0b101",
            "0o17",
            "2001-12-14t21:59:43.10-05:00",
            "1_000",
            "0b1c2d3e",
            ".inf",
            "-1",
            "+1",
            "2001-12-14",
            "",
            " a",
            "a ",
            "a: b",
            "a #b",
            "#x",
            "*x",
            "&x",
            "!x",
            "%x",
            "@x",
            "`x",
            "{x}",
            "[x]",
            "a\nb",
            "é",
        ] {
            assert!(!plain_ok(s), "{s:?} must be quoted");
            let text = to_string(&Value::Mapping(
                [(Value::from("k"), Value::from(s))].into_iter().collect(),
            ));
            assert!(text.starts_with("k: \""), "{s:?}: {text}");
        }
        for s in [
            "unix:///run/containerd/containerd.sock",
            "v1.28.7",
            "registry.k8s.io/pause:3.9",
            "master.k8s.io:16443",
            "/etc/nodebake/kubeadm-patches",
            "kubeadm.k8s.io/v1beta3",
            "A=true,B=false",
            "nodebake token (joins and rebuilds)",
            "24h0m0s",
            "60s",
            "10m",
        ] {
            assert!(plain_ok(s), "{s:?} may stay plain");
        }
    }

    #[test]
    fn documents_round_trip() {
        let v: Value = serde_yaml::from_str(
            "a: 1\nb: [x, 'y', {c: d, e: [1, 2]}, [3, [4]]]\nf: {g: {h: 'on'}, i: []}\nj: {}\nk: null\nl: true\nm: \"1:20\"\n",
        )
        .unwrap();
        round_trip(&v);
        assert_eq!(
            to_string(&v),
            "a: 1\nb:\n- x\n- \"y\"\n- c: d\n  e:\n  - 1\n  - 2\n- - 3\n  - - 4\nf:\n  g:\n    h: \"on\"\n  i: []\nj: {}\nk: null\nl: true\nm: \"1:20\"\n"
        );
    }
}
