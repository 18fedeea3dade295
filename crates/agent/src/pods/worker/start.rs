//! Starting a container: its back-off, its image (by pull policy, with
//! the pod's registry credentials) and its runtime spec from the pod's.

use scanner::policy::Verdict;

use super::*;

impl Worker {
    /// Starts the container now, or when its back-off has passed.
    pub(super) async fn start_when_due(&mut self, container: &Container) {
        let name = container.name.clone();
        let pod_name = self.pod.metadata.name.clone().unwrap_or_default();
        // An exit not yet counted sets the back-off before the next start.
        let run = self.runs.entry(name.clone()).or_default();
        if let (
            Some(id),
            Some(RuntimeStatus::Exited {
                started_at,
                finished_at,
                ..
            }),
        ) = (&run.id, &run.status)
            && run.handled_exit.as_ref() != Some(id)
        {
            run.handled_exit = Some(id.clone());
            let ran_long = started_at.is_some_and(|started| {
                finished_at
                    .duration_since(started)
                    .is_ok_and(|ran| ran >= BACKOFF_RESET)
            });
            let backoff = if ran_long {
                BACKOFF_START
            } else {
                run.backoff
                    .map_or(BACKOFF_START, |backoff| (backoff * 2).min(BACKOFF_MAX))
            };
            run.backoff = Some(backoff);
            run.next_start = Some(Instant::now() + backoff);
        }
        let field = Some(format!("spec.containers{{{name}}}"));
        if let Some(run) = self.runs.get(&name)
            && run.image_retry.is_some_and(|at| Instant::now() < at)
        {
            return;
        }
        if let Some(run) = self.runs.get_mut(&name)
            && let Some(at) = run.next_start
            && Instant::now() < at
        {
            let backoff = run.backoff.unwrap_or(BACKOFF_START);
            let message = format!(
                "back-off {} restarting failed container={name} pod={pod_name}_{}({})",
                humanize(backoff),
                self.pod.metadata.namespace.clone().unwrap_or_default(),
                self.uid
            );
            if run.waiting.as_ref().map(|(reason, _)| reason.as_str()) != Some("CrashLoopBackOff") {
                self.ctx.events.pod_field(
                    &self.pod,
                    field,
                    true,
                    "BackOff",
                    "Back-off restarting failed container".to_string(),
                );
            }
            run.waiting = Some(("CrashLoopBackOff".into(), message));
            return;
        }
        // The image.
        let image = match self.ensure_image(container).await {
            Some(image) => image,
            None => return,
        };
        if !self.scan_allows(container, &image).await {
            return;
        }
        // The configuration.
        let container_spec = match self.container_spec(container, &image).await {
            Ok(spec) => spec,
            Err(message) => {
                if let Some(run) = self.runs.get_mut(&name) {
                    run.waiting = Some(("CreateContainerConfigError".into(), message.clone()));
                }
                self.ctx.events.pod_field(
                    &self.pod,
                    field,
                    true,
                    "Failed",
                    format!("Error: {message}"),
                );
                return;
            }
        };
        let uid = self.uid.clone();
        let runtime = self.ctx.runtime.clone();
        let started = blocking(move || runtime.start_container(&uid, &container_spec)).await;
        let run = self.runs.entry(name.clone()).or_default();
        run.waiting = None;
        let new_attempt = if run.id.is_some() {
            run.attempt + 1
        } else {
            run.attempt
        };
        match started {
            Ok(id) => {
                if let Some(previous) = run.id.take() {
                    run.last_terminated = terminated_of(&previous, run.status.as_ref());
                    let runtime = self.ctx.runtime.clone();
                    let previous_id = previous.clone();
                    // The previous instance's record goes; its log stays.
                    let _ = blocking(move || runtime.remove_container(&previous_id)).await;
                }
                run.attempt = new_attempt;
                run.id = Some(id);
                run.status = None;
                run.liveness = container.liveness_probe.as_ref().map(|_| ProbeState::new());
                run.readiness = container
                    .readiness_probe
                    .as_ref()
                    .map(|_| ProbeState::new());
                run.startup = container.startup_probe.as_ref().map(|_| ProbeState::new());
                self.ctx.events.pod_field(
                    &self.pod,
                    field.clone(),
                    false,
                    "Created",
                    format!("Created container {name}"),
                );
                self.ctx.events.pod_field(
                    &self.pod,
                    field,
                    false,
                    "Started",
                    format!("Started container {name}"),
                );
            }
            Err(PodError::ContainerCannotRun {
                id,
                message,
                exit_code,
                ..
            }) => {
                if let Some(previous) = run.id.replace(id) {
                    run.last_terminated = terminated_of(&previous, run.status.as_ref());
                }
                run.attempt = new_attempt;
                run.status = Some(RuntimeStatus::Exited {
                    exit_code,
                    signal: None,
                    reason: runtime::pod::ExitReason::ContainerCannotRun,
                    message: message.clone(),
                    started_at: None,
                    finished_at: SystemTime::now(),
                });
                self.ctx.events.pod_field(
                    &self.pod,
                    field,
                    true,
                    "Failed",
                    format!("Error: {message}"),
                );
            }
            Err(error) => {
                run.waiting = Some(("CreateContainerError".into(), error.to_string()));
                self.ctx.events.pod_field(
                    &self.pod,
                    field,
                    true,
                    "Failed",
                    format!("Error: {error}"),
                );
            }
        }
    }

    async fn ensure_image(&mut self, container: &Container) -> Option<ImageInfo> {
        let name = container.name.clone();
        let image_name = container.image.clone().unwrap_or_default();
        let field = Some(format!("spec.containers{{{name}}}"));
        let policy = match container.image_pull_policy.as_deref() {
            Some("Always") => PullPolicy::Always,
            Some("Never") => PullPolicy::Never,
            Some("IfNotPresent") => PullPolicy::IfNotPresent,
            _ if image_name.ends_with(":latest")
                || !image_name.rsplit('/').next().unwrap_or("").contains(':') =>
            {
                PullPolicy::Always
            }
            _ => PullPolicy::IfNotPresent,
        };
        let run = self.runs.entry(name.clone()).or_default();
        if let Some(image) = &run.image
            && policy != PullPolicy::Always
        {
            return Some(image.clone());
        }
        let credentials = self.registry_auth(&image_name).await;
        let runtime = self.ctx.runtime.clone();
        let insecure = self.ctx.config.insecure_images;
        let wanted = image_name.clone();
        let pulling = policy != PullPolicy::Never;
        if pulling {
            self.ctx.events.pod_field(
                &self.pod,
                field.clone(),
                false,
                "Pulling",
                format!("Pulling image {image_name:?}"),
            );
        }
        let begun = Instant::now();
        let result =
            blocking(move || runtime.ensure_image(&wanted, policy, credentials.as_ref(), insecure))
                .await;
        let run = self.runs.entry(name.clone()).or_default();
        match result {
            Ok(image) => {
                if pulling {
                    self.ctx.events.pod_field(
                        &self.pod,
                        field,
                        false,
                        "Pulled",
                        format!(
                            "Successfully pulled image {image_name:?} in {}ms",
                            begun.elapsed().as_millis()
                        ),
                    );
                }
                run.image = Some(image.clone());
                Some(image)
            }
            Err(error) => {
                let reason = match error {
                    PodError::ImageNotPresent { .. } => "ErrImageNeverPull",
                    _ if run.waiting.as_ref().is_some_and(|(reason, _)| {
                        reason == "ErrImagePull" || reason == "ImagePullBackOff"
                    }) =>
                    {
                        "ImagePullBackOff"
                    }
                    _ => "ErrImagePull",
                };
                run.waiting = Some((reason.to_string(), error.to_string()));
                run.image_retry = Some(Instant::now() + BACKOFF_START);
                self.ctx.events.pod_field(
                    &self.pod,
                    field,
                    true,
                    "Failed",
                    format!("Failed to pull image {image_name:?}: {error}"),
                );
                None
            }
        }
    }

    /// Asks the image scan policy, when it is on, whether `image` may run;
    /// a refusal (or a scan that cannot be made) leaves the container
    /// waiting with reason `ImageScanRefused`, a Warning event of that
    /// reason on the pod, and another check after the pull back-off.
    async fn scan_allows(&mut self, container: &Container, image: &ImageInfo) -> bool {
        let Some(policy) = self.ctx.scan_policy.clone() else {
            return true;
        };
        let name = container.name.clone();
        let data_dir = self.ctx.config.data_dir.clone();
        let reference = image.id.clone();
        let shown_as = container
            .image
            .clone()
            .unwrap_or_else(|| image.local_name.clone());
        let checked = tokio::task::spawn_blocking(move || {
            let store = runtime::image::store::Store::open(&data_dir)
                .map_err(|error| format!("cannot open the content store: {error:#}"))?;
            policy
                .check(&store, &reference, &shown_as)
                .map_err(|error| error.to_string())
        })
        .await
        .unwrap_or_else(|error| Err(format!("the image scan stopped: {error}")));
        let message = match checked {
            Ok(Verdict::Allowed { warnings, .. }) => {
                for warning in warnings {
                    tracing::debug!(image = %image.local_name, %warning, "image scan");
                }
                return true;
            }
            Ok(Verdict::Refused(refusal)) => refusal.to_string(),
            Err(message) => message,
        };
        let run = self.runs.entry(name.clone()).or_default();
        run.waiting = Some(("ImageScanRefused".to_string(), message.clone()));
        run.image_retry = Some(Instant::now() + BACKOFF_START);
        // With `Always`, the next check pulls again: a newer image under the
        // same tag may pass.
        run.image = None;
        self.ctx.events.pod_field(
            &self.pod,
            Some(format!("spec.containers{{{name}}}")),
            true,
            "ImageScanRefused",
            message,
        );
        false
    }

    /// Registry credentials from the pod's `imagePullSecrets`.
    async fn registry_auth(&self, image: &str) -> Option<RegistryAuth> {
        let registry = image
            .split('/')
            .next()
            .filter(|first| {
                image.contains('/')
                    && (first.contains('.') || first.contains(':') || *first == "localhost")
            })
            .unwrap_or("docker.io")
            .to_string();
        let namespace = self.pod.metadata.namespace.clone().unwrap_or_default();
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &namespace);
        for reference in self.spec().image_pull_secrets.iter().flatten() {
            let Ok(Some(secret)) = secrets.get_opt(&reference.name).await else {
                continue;
            };
            for key in [".dockerconfigjson", ".dockercfg"] {
                if let Some(bytes) = secret.data.as_ref().and_then(|data| data.get(key))
                    && let Ok(Some(auth)) = RegistryAuth::from_docker_config(&bytes.0, &registry)
                {
                    return Some(auth);
                }
            }
        }
        None
    }

    async fn container_spec(
        &self,
        container: &Container,
        image: &ImageInfo,
    ) -> Result<ContainerSpec, String> {
        let namespace = self.pod.metadata.namespace.clone().unwrap_or_default();
        let (config_map_names, secret_names) = spec::env_references(container);
        let mut referenced = spec::Referenced::default();
        let config_maps: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), &namespace);
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &namespace);
        for name in config_map_names {
            let found = config_maps
                .get_opt(&name)
                .await
                .map_err(|error| error.to_string())?;
            referenced.config_maps.insert(name, found);
        }
        for name in secret_names {
            let found = secrets
                .get_opt(&name)
                .await
                .map_err(|error| error.to_string())?;
            referenced.secrets.insert(name, found);
        }
        let env = spec::environment(
            &self.pod,
            container,
            &referenced,
            &self.host_ip(),
            &self.pod_ip_text(),
        )
        .map_err(|error| error.0)?;
        let args = spec::argv(container, image, &env);
        let security = container.security_context.clone().unwrap_or_default();
        let pod_security = self.spec().security_context.unwrap_or_default();
        let privileged = security.privileged.unwrap_or(false);
        let mounts = self.mounts.clone().unwrap_or_default();
        let mut container_mounts = Vec::new();
        for mount in container.volume_mounts.iter().flatten() {
            let Some(host_path) = mounts.get(&mount.name) else {
                return Err(format!(
                    "volume {:?} of mount {:?} is not in the pod's volumes",
                    mount.name, mount.mount_path
                ));
            };
            let host_path = match &mount.sub_path {
                Some(sub) if !sub.is_empty() => {
                    if sub.split('/').any(|part| part == "..") || sub.starts_with('/') {
                        return Err(format!("invalid subPath {sub:?}"));
                    }
                    confined_sub_path(host_path, sub)?
                }
                _ => host_path.clone(),
            };
            container_mounts.push(Mount {
                host_path,
                container_path: PathBuf::from(&mount.mount_path),
                read_only: mount.read_only.unwrap_or(false),
            });
        }
        // The pod's name files, unless the container mounts its own there.
        for name_mount in &self.name_mounts {
            if !container_mounts
                .iter()
                .any(|mount| mount.container_path == name_mount.container_path)
            {
                container_mounts.push(name_mount.clone());
            }
        }
        let capabilities = security.capabilities.clone().unwrap_or_default();
        let attempt = self
            .runs
            .get(&container.name)
            .map(|run| {
                if run.id.is_some() {
                    run.attempt + 1
                } else {
                    run.attempt
                }
            })
            .unwrap_or(0);
        Ok(ContainerSpec {
            name: container.name.clone(),
            image: image.id.clone(),
            args,
            env,
            working_dir: container.working_dir.clone(),
            user: security
                .run_as_user
                .or(pod_security.run_as_user)
                .map(|uid| uid as u32),
            group: security
                .run_as_group
                .or(pod_security.run_as_group)
                .map(|gid| gid as u32),
            supplemental_groups: pod_security
                .supplemental_groups
                .unwrap_or_default()
                .into_iter()
                .map(|gid| gid as u32)
                .collect(),
            read_only_rootfs: security.read_only_root_filesystem.unwrap_or(false),
            capabilities_add: capabilities.add.unwrap_or_default(),
            capabilities_drop: capabilities.drop.unwrap_or_default(),
            privileged,
            mounts: container_mounts,
            resources: spec::resources(container),
            attempt,
            tty: container.tty.unwrap_or(false),
            stdin: container.stdin.unwrap_or(false),
            seccomp: spec::seccomp(
                security.seccomp_profile.as_ref(),
                pod_security.seccomp_profile.as_ref(),
                &self.ctx.config.data_dir,
            )
            .map_err(|error| error.0)?,
            allow_privilege_escalation: security.allow_privilege_escalation.unwrap_or(false),
        })
    }
}

/// `volume/sub`, which must stay inside the volume once symlinks are
/// followed: a container could have made `sub` a link to `/` in a shared
/// volume, and the bind mount would follow it (CVE-2017-1002101). The
/// check and the mount are two steps: a container racing to swap a
/// directory of the path for a link in between is not stopped here. A
/// missing directory is made, as the kubelet does, once the part of the
/// path that exists is known to be inside.
fn confined_sub_path(volume: &std::path::Path, sub: &str) -> Result<PathBuf, String> {
    let root = volume
        .canonicalize()
        .map_err(|error| format!("volume {}: {error}", volume.display()))?;
    let joined = root.join(sub);
    if std::fs::symlink_metadata(&joined).is_err() {
        let existing = joined
            .ancestors()
            .find(|ancestor| std::fs::symlink_metadata(ancestor).is_ok())
            .and_then(|ancestor| ancestor.canonicalize().ok());
        if !existing.is_some_and(|existing| existing.starts_with(&root)) {
            return Err(format!("subPath {sub:?} leads out of its volume"));
        }
        std::fs::create_dir_all(&joined)
            .map_err(|error| format!("cannot create subPath {sub:?}: {error}"))?;
    }
    let resolved = joined
        .canonicalize()
        .map_err(|error| format!("subPath {sub:?}: {error}"))?;
    if !resolved.starts_with(&root) {
        return Err(format!("subPath {sub:?} leads out of its volume"));
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::confined_sub_path;

    #[test]
    fn a_sub_path_may_not_lead_out_of_its_volume_through_a_link() {
        let volume = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), volume.path().join("evil")).unwrap();
        std::os::unix::fs::symlink("/", volume.path().join("root")).unwrap();
        std::fs::create_dir(volume.path().join("data")).unwrap();
        for sub in ["evil", "root", "root/etc", "evil/new/dir"] {
            let error = confined_sub_path(volume.path(), sub).unwrap_err();
            assert!(error.contains("leads out"), "{sub}: {error}");
        }
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        let inside = confined_sub_path(volume.path(), "data").unwrap();
        assert!(inside.ends_with("data"));
        // A missing directory inside is made.
        let made = confined_sub_path(volume.path(), "data/new").unwrap();
        assert!(made.is_dir());
    }
}
