//! Liveness, readiness and startup probes, run from the machine into the
//! pod (HTTP, TCP, gRPC) or in the container (exec).

use super::*;

impl Worker {
    pub(super) async fn probe(&mut self, container: &Container) {
        let name = container.name.clone();
        let ip = if self.host_network() {
            self.ctx.config.node_ip
        } else {
            match self.pod_ip {
                Some(ip) => ip,
                None => return,
            }
        };
        let field = Some(format!("spec.containers{{{name}}}"));
        // Startup first: until it passes, the others wait.
        let kinds: [(&str, Option<&k8s_openapi::api::core::v1::Probe>); 3] = [
            ("Startup", container.startup_probe.as_ref()),
            ("Liveness", container.liveness_probe.as_ref()),
            ("Readiness", container.readiness_probe.as_ref()),
        ];
        for (kind, probe) in kinds {
            let Some(probe) = probe else { continue };
            let Some(run) = self.runs.get(&name) else {
                return;
            };
            if kind != "Startup"
                && run
                    .startup
                    .as_ref()
                    .is_some_and(|s| s.verdict != Some(true))
            {
                return;
            }
            let state = match kind {
                "Startup" => run.startup.as_ref(),
                "Liveness" => run.liveness.as_ref(),
                _ => run.readiness.as_ref(),
            };
            let Some(state) = state else { continue };
            if kind == "Startup" && state.verdict == Some(true) {
                continue;
            }
            if !state.due(probe) {
                continue;
            }
            let outcome = match probe::run_network(probe, container, ip).await {
                Some(outcome) => outcome,
                None => self.exec_probe(&name, probe).await,
            };
            let Some(run) = self.runs.get_mut(&name) else {
                return;
            };
            let state = match kind {
                "Startup" => run.startup.as_mut(),
                "Liveness" => run.liveness.as_mut(),
                _ => run.readiness.as_mut(),
            };
            let Some(state) = state else { continue };
            state.record(probe, &outcome);
            if let Outcome::Failure(message) = &outcome {
                self.ctx.events.pod_field(
                    &self.pod,
                    field.clone(),
                    true,
                    "Unhealthy",
                    format!("{kind} probe failed: {message}"),
                );
            }
            let failed = state.verdict == Some(false);
            if failed && kind != "Readiness" {
                // Liveness or startup failed: the container is restarted.
                self.ctx.events.pod_field(
                    &self.pod,
                    field.clone(),
                    false,
                    "Killing",
                    format!(
                        "Container {name} failed {} probe, will be restarted",
                        kind.to_lowercase()
                    ),
                );
                let grace = Duration::from_secs(
                    self.spec()
                        .termination_grace_period_seconds
                        .unwrap_or(30)
                        .max(0) as u64,
                );
                if let Some(id) = self.runs.get(&name).and_then(|run| run.id.clone()) {
                    let runtime = self.ctx.runtime.clone();
                    let _ = blocking(move || runtime.stop_container(&id, grace)).await;
                }
                return;
            }
        }
    }

    async fn exec_probe(&self, name: &str, probe: &k8s_openapi::api::core::v1::Probe) -> Outcome {
        let Some(command) = probe.exec.as_ref().and_then(|exec| exec.command.clone()) else {
            return Outcome::Failure("the probe has no handler".into());
        };
        let Some(id) = self.runs.get(name).and_then(|run| run.id.clone()) else {
            return Outcome::Failure("the container is not running".into());
        };
        let runtime = self.ctx.runtime.clone();
        let timeout = probe::exec_timeout(probe);
        let output = blocking(move || runtime.exec_sync(&id, &command, timeout)).await;
        match output {
            Ok(output) if output.exit_code == 0 => Outcome::Success,
            Ok(output) => {
                let text = String::from_utf8_lossy(&output.stdout).trim().to_string();
                Outcome::Failure(format!(
                    "command exited with {}{}",
                    output.exit_code,
                    if text.is_empty() {
                        String::new()
                    } else {
                        format!(": {text}")
                    }
                ))
            }
            Err(error) => Outcome::Failure(error.to_string()),
        }
    }
}
