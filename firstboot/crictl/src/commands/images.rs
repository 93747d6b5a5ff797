//! Images: `crictl pull` (PullImage), `crictl inspecti` (ImageStatus) and
//! `crictl images` (ListImages). kubeadm runs `inspecti IMAGE` to learn
//! whether an image is present (exit 0) or not (exit 1), and `pull IMAGE`
//! for the missing ones.

use anyhow::{anyhow, bail, Context, Result};

use super::truncated_id;
use crate::cli::{self, ImagesArgs, InspectiArgs, PullArgs};
use crate::cri::{AuthConfig, Image, ImageClient, ListImagesResponse};
use crate::output::human::human_size;
use crate::output::json::{self, render_message, Format};
use crate::output::table::Table;
use crate::settings::{process_env, Settings};

/// Runs `crictl pull`.
pub async fn pull(settings: &Settings, args: PullArgs) -> Result<()> {
    let image = args
        .image
        .filter(|i| !i.is_empty())
        .ok_or_else(|| anyhow!("Image name cannot be empty"))?;
    let creds = args.creds.or_else(|| process_env("CRICTL_CREDS"));
    let auth = args.auth.or_else(|| process_env("CRICTL_AUTH"));
    let auth = auth_config(creds.as_deref(), auth.as_deref())?;
    let mut client = ImageClient::new(settings);
    let image_ref = client
        .pull_image(&image, auth)
        .await
        .context("pulling image")?;
    println!("Image is up to date for {image_ref}");
    Ok(())
}

/// Registry credentials from `--creds USER[:PASSWORD]` or `--auth BASE64`.
pub fn auth_config(creds: Option<&str>, auth: Option<&str>) -> Result<Option<AuthConfig>> {
    match (creds, auth) {
        (Some(_), Some(_)) => bail!("both `--creds` and `--auth` are specified"),
        (Some(creds), None) => {
            let (username, password) = creds.split_once(':').unwrap_or((creds, ""));
            if username.is_empty() {
                bail!("username can't be empty");
            }
            Ok(Some(AuthConfig {
                username: username.into(),
                password: password.into(),
                ..AuthConfig::default()
            }))
        }
        (None, Some(auth)) => Ok(Some(AuthConfig {
            auth: auth.into(),
            ..AuthConfig::default()
        })),
        (None, None) => Ok(None),
    }
}

/// Runs `crictl inspecti`: each image's status and info, or an error for
/// the first image the runtime does not have.
pub async fn inspect(settings: &Settings, args: InspectiArgs) -> Result<()> {
    if args.ids.is_empty() {
        cli::print_subcommand_help("inspecti");
        return Ok(());
    }
    let mut client = ImageClient::new(settings);
    for id in &args.ids {
        let response = client
            .image_status(id, !args.quiet)
            .await
            .with_context(|| format!("image status for {id:?} request"))?;
        let image = response
            .image
            .ok_or_else(|| anyhow!("no such image {id:?} present"))?;
        let text = match (Format::parse(&args.output), args.output.as_str()) {
            (Some(format), _) => json::status_info(&image, &response.info)
                .and_then(|object| json::render(&object, format, &args.template))
                .with_context(|| format!("output status for {id:?}"))?,
            (None, "table") => describe_image(&image, (!args.quiet).then_some(&response.info)),
            (None, other) => bail!("output option cannot be {other}"),
        };
        println!("{text}");
    }
    Ok(())
}

/// `inspecti -o table` for one image.
fn describe_image(
    image: &Image,
    info: Option<&std::collections::BTreeMap<String, String>>,
) -> String {
    let mut lines = vec![format!("ID: {}", image.id)];
    lines.extend(image.repo_tags.iter().map(|t| format!("Tag: {t}")));
    lines.extend(image.repo_digests.iter().map(|d| format!("Digest: {d}")));
    lines.push(format!("Size: {}", human_size(image.size)));
    if let Some(info) = info {
        let entries: Vec<String> = info.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        lines.push(format!("Info: map[{}]", entries.join(" ")));
    }
    lines.join("\n")
}

/// Runs `crictl images`.
pub async fn list(settings: &Settings, args: ImagesArgs) -> Result<()> {
    let mut client = ImageClient::new(settings);
    let mut images = client
        .list_images(args.filter.as_deref())
        .await
        .context("listing images")?;
    images.sort_by(compare_by_ref);
    match args.output.as_str() {
        "json" | "yaml" => {
            let response = ListImagesResponse { images };
            println!("{}", render_message(&response, &args.output)?);
        }
        _ => print!("{}", render_images(&images, &args)),
    }
    Ok(())
}

/// crictl's order of images: by first tag, else first digest, else ID.
fn compare_by_ref(a: &Image, b: &Image) -> std::cmp::Ordering {
    if let (Some(x), Some(y)) = (a.repo_tags.first(), b.repo_tags.first()) {
        return x.cmp(y);
    }
    match (a.repo_digests.first(), b.repo_digests.first()) {
        (Some(x), Some(y)) => x.cmp(y),
        _ => a.id.cmp(&b.id),
    }
}

/// The text of `images` without `-o json|yaml`.
fn render_images(images: &[Image], args: &ImagesArgs) -> String {
    if args.quiet {
        return images.iter().map(|i| format!("{}\n", i.id)).collect();
    }
    if args.verbose {
        return images.iter().map(describe_listed_image).collect();
    }
    let mut table = Table::new();
    let mut header = vec!["IMAGE", "TAG", "IMAGE ID", "SIZE"];
    if args.digests {
        header.insert(2, "DIGEST");
    }
    table.add_row(header);
    for image in images {
        let (name, digest) = split_repo_digest(&image.repo_digests);
        let (id, digest) = if args.no_trunc {
            (image.id.clone(), digest)
        } else {
            (
                truncated_id(&image.id, "sha256:"),
                truncated_id(&digest, "sha256:"),
            )
        };
        let size = human_size(image.size);
        for (repo, tag) in repo_tag_pairs(&image.repo_tags, &name) {
            let mut row = vec![repo, tag, id.clone(), size.clone()];
            if args.digests {
                row.insert(2, digest.clone());
            }
            table.add_row(row);
        }
    }
    table.render()
}

/// `images -v` for one image.
fn describe_listed_image(image: &Image) -> String {
    let mut out = format!("ID: {}\n", image.id);
    for tag in &image.repo_tags {
        out.push_str(&format!("RepoTags: {tag}\n"));
    }
    for digest in &image.repo_digests {
        out.push_str(&format!("RepoDigests: {digest}\n"));
    }
    if image.size != 0 {
        out.push_str(&format!("Size: {}\n", image.size));
    }
    if let Some(uid) = &image.uid {
        out.push_str(&format!("Uid: value:{}\n", uid.value));
    }
    if !image.username.is_empty() {
        out.push_str(&format!("Username: {}\n", image.username));
    }
    out.push('\n');
    out
}

/// The repository and digest of the first `repo@digest`, `<none>` when
/// there is none.
fn split_repo_digest(digests: &[String]) -> (String, String) {
    match digests.first() {
        None => ("<none>".into(), "<none>".into()),
        Some(d) => match d.split('@').collect::<Vec<_>>()[..] {
            [name, digest] => (name.into(), digest.into()),
            _ => ("errorName".into(), "errorRepoDigest".into()),
        },
    }
}

/// `(repository, tag)` for each `repo:tag`; an untagged image shows its
/// digest's repository and `<none>`.
fn repo_tag_pairs(tags: &[String], image_name: &str) -> Vec<(String, String)> {
    if tags.is_empty() {
        return vec![(image_name.into(), "<none>".into())];
    }
    tags.iter()
        .map(|tag| match tag.rsplit_once(':') {
            Some(("<none>", t)) => (image_name.into(), t.into()),
            Some((repo, t)) => (repo.into(), t.into()),
            None => ("errorRepoTag".into(), "errorRepoTag".into()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_tags_and_digests_like_crictl() {
        assert_eq!(
            repo_tag_pairs(&["localhost:5000/a/b:1.0".into()], "x"),
            [("localhost:5000/a/b".to_string(), "1.0".to_string())]
        );
        assert_eq!(
            repo_tag_pairs(&[], "repo"),
            [("repo".to_string(), "<none>".to_string())]
        );
        assert_eq!(
            split_repo_digest(&["docker.io/x@sha256:ab".into()]),
            ("docker.io/x".to_string(), "sha256:ab".to_string())
        );
    }

    #[test]
    fn builds_auth_from_creds_or_auth() {
        let auth = auth_config(Some("user:pa:ss"), None).unwrap().unwrap();
        assert_eq!(
            (auth.username.as_str(), auth.password.as_str()),
            ("user", "pa:ss")
        );
        assert_eq!(
            auth_config(None, Some("dXNlcg==")).unwrap().unwrap().auth,
            "dXNlcg=="
        );
        assert!(auth_config(Some("u"), Some("a")).is_err());
        assert!(auth_config(Some(":pw"), None).is_err());
        assert!(auth_config(None, None).unwrap().is_none());
    }
}
