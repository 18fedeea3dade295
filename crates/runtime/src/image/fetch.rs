//! `image fetch`: pulls an image from an OCI distribution registry into the
//! content store. The manifest (for this machine's platform, when the
//! registry serves an index) is verified against its digest; the config and
//! layers stream through the content store's verifying writer, as an import
//! does, so a fetched image has the same shape as an imported one and a
//! tampered blob is refused before anything is stored.

use std::io::{Cursor, IsTerminal, Read};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::digest::Digest;
use crate::image::import;
use crate::image::oci::{self, Descriptor, Index, Manifest};
use crate::image::reference::ImageRef;
use crate::image::registry::{Client, RemoteRef};
use crate::image::store::Store;

#[derive(Clone, Debug, Default)]
pub struct FetchOptions {
    /// Talk plain http to the registry (the user's `--insecure-registry`).
    pub insecure_registry: bool,
    /// The local name to give the image instead of the reference's own.
    pub name: Option<ImageRef>,
    /// Draw a progress bar of the layers' bytes on stderr (only drawn when
    /// stderr is a terminal).
    pub progress: bool,
    /// A login (user name, password) for a registry that asks for one.
    pub credentials: Option<(String, String)>,
}

/// Fetches `text` (`[HOST/]NAME[:TAG][@DIGEST]`) and names it; returns its
/// local name and manifest digest.
pub fn fetch(
    store: &Store,
    text: &str,
    options: &FetchOptions,
) -> anyhow::Result<(ImageRef, Digest)> {
    let remote = RemoteRef::parse(text)?;
    let reference = match &options.name {
        Some(name) => name.clone(),
        None => remote.local_name()?,
    };
    let mut client = Client::new(&remote, options.insecure_registry);
    if let Some((username, password)) = &options.credentials {
        client = client.with_credentials(username, password);
    }
    let _sweep_guard = store.sweep_guard(false)?;

    let mut fetched = client.manifest(&remote.manifest_reference())?;
    // An index (a multi-platform image) points at one manifest per
    // platform; follow it to this machine's. Bounded: a real image nests
    // at most once.
    for _ in 0..4 {
        if !Index::is_index_media_type(&fetched.media_type) {
            break;
        }
        let index: Index = serde_json::from_slice(&fetched.bytes)
            .with_context(|| format!("image index {} is not valid", fetched.digest))?;
        let entry = index.manifest_for_host().with_context(|| {
            format!(
                "{remote} has no linux/{} image (index {})",
                oci::host_architecture(),
                fetched.digest
            )
        })?;
        fetched = client.manifest(&entry.digest.to_string())?;
    }
    if !oci::is_manifest_media_type(&fetched.media_type) {
        bail!("image index {} is nested too deeply", fetched.digest);
    }
    let manifest: Manifest = serde_json::from_slice(&fetched.bytes)
        .with_context(|| format!("manifest {} is not a valid image manifest", fetched.digest))?;
    let manifest_descriptor = Descriptor {
        media_type: fetched.media_type.clone(),
        digest: fetched.digest.clone(),
        size: fetched.bytes.len() as u64,
        annotations: Default::default(),
        platform: None,
    };

    let bar = progress_bar(options.progress, &remote, store, &manifest);
    let open_blob = |descriptor: &Descriptor| -> anyhow::Result<Box<dyn Read>> {
        if descriptor.digest == manifest_descriptor.digest {
            return Ok(Box::new(Cursor::new(fetched.bytes.clone())));
        }
        let reader = client.blob(&descriptor.digest)?;
        let is_layer = manifest
            .layers
            .iter()
            .any(|layer| layer.digest == descriptor.digest);
        Ok(if is_layer {
            Box::new(bar.wrap_read(reader))
        } else {
            reader
        })
    };
    let result = import::store_image(store, &manifest_descriptor, &reference, open_blob)
        .with_context(|| format!("cannot fetch {remote}"));
    bar.finish_and_clear();
    result
}

/// A bar over the bytes of the layers not in the store yet, on stderr when
/// it is a terminal (hidden otherwise, so logs and pipes get no control
/// characters).
fn progress_bar(
    enabled: bool,
    remote: &RemoteRef,
    store: &Store,
    manifest: &Manifest,
) -> ProgressBar {
    let total: u64 = manifest
        .layers
        .iter()
        .filter(|layer| !store.has_blob(&layer.digest))
        .map(|layer| layer.size)
        .sum();
    let target = if enabled && std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(format!("fetching {remote}"));
    bar
}
