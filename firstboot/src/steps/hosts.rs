//! `/etc/hosts`: one managed block with every master, worker and the
//! control-plane endpoint; lines outside the block are never touched.

use anyhow::Result;
use nodebake_contract::node::NodeConfig;

use crate::step::{pending_files, write_files, Ctx, FileSpec, Pending, Step};

/// First line of the managed block.
pub const BEGIN: &str = "# BEGIN nodebake managed block (edits inside are replaced at first boot)";
/// Last line of the managed block.
pub const END: &str = "# END nodebake managed block";

/// Maintains the managed `/etc/hosts` block.
pub struct Hosts;

/// The managed block for `node`, markers included.
pub fn render_block(node: &NodeConfig) -> String {
    let mut s = format!("{BEGIN}\n");
    s += &format!("{} {}\n", node.endpoint.vip, node.endpoint.dns_name);
    for m in node.members() {
        s += &format!("{} {}\n", m.ip, m.name);
    }
    s += END;
    s.push('\n');
    s
}

/// `existing` with its managed block replaced by `block` (or `block`
/// appended when there is none). Every other line is kept as it was.
pub fn merge(existing: &str, block: &str) -> String {
    let lines: Vec<&str> = existing.lines().collect();
    let begin = lines.iter().position(|l| l.trim_end() == BEGIN);
    let end = begin.and_then(|b| {
        lines[b..]
            .iter()
            .position(|l| l.trim_end() == END)
            .map(|e| b + e)
    });
    match (begin, end) {
        (Some(b), Some(e)) => {
            let mut out = String::new();
            for l in &lines[..b] {
                out += l;
                out.push('\n');
            }
            out += block;
            for l in &lines[e + 1..] {
                out += l;
                out.push('\n');
            }
            out
        }
        _ => {
            let mut out = existing.to_string();
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out + block
        }
    }
}

fn files(cx: &Ctx<'_>) -> Result<Vec<FileSpec>> {
    let existing = cx.root.read_opt("/etc/hosts")?.unwrap_or_default();
    Ok(vec![FileSpec::new(
        "/etc/hosts",
        merge(&existing, &render_block(cx.node)),
    )])
}

impl Step for Hosts {
    fn id(&self) -> &'static str {
        "hosts"
    }

    fn describe(&self) -> &'static str {
        "write every master, worker and the endpoint name into a managed /etc/hosts block"
    }

    fn check(&self, cx: &Ctx<'_>) -> Result<Vec<Pending>> {
        pending_files(cx.root, &files(cx)?)
    }

    fn apply(&self, cx: &mut Ctx<'_>) -> Result<()> {
        let f = files(cx)?;
        write_files(cx, &f)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: &str = "# BEGIN nodebake managed block (edits inside are replaced at first boot)\n1.2.3.4 a\n# END nodebake managed block\n";

    #[test]
    fn appends_then_replaces_in_place() {
        let start = "127.0.0.1 localhost\n::1 localhost";
        let once = merge(start, BLOCK);
        assert_eq!(once, format!("127.0.0.1 localhost\n::1 localhost\n{BLOCK}"));
        assert_eq!(merge(&once, BLOCK), once);
        let edited = format!("{once}10.0.0.1 other\n").replace("1.2.3.4 a", "9.9.9.9 stale");
        let fixed = merge(&edited, BLOCK);
        assert!(fixed.contains("1.2.3.4 a") && !fixed.contains("stale"));
        assert!(fixed.ends_with("10.0.0.1 other\n"));
        assert!(fixed.starts_with("127.0.0.1 localhost\n::1 localhost\n"));
    }

    #[test]
    fn empty_file_gets_only_the_block() {
        assert_eq!(merge("", BLOCK), BLOCK);
    }
}
