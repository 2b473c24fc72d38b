//! GetContainerEvents: lifecycle events for kubelet's evented PLEG, and the watcher that notices
//! containers exiting on their own.

use super::status::status_of;
use crate::context::Context;
use k8s_cri::v1 as cri;
use k8s_cri::v1::ContainerEventType;
use std::sync::Arc;
use std::time::Duration;

/// How often running containers are checked for an exit record. kubelet's generic PLEG relists
/// every second too; evented PLEG subscribers get the event within this period.
const EXIT_POLL: Duration = Duration::from_millis(500);

impl Context {
    /// Send an event for one container with its pod's and the pod's containers' statuses.
    /// Nobody listening is fine.
    pub fn emit(&self, id: &str, kind: ContainerEventType) {
        if self.events.receiver_count() == 0 {
            return;
        }
        let Some(record) = self.containers.get(id) else {
            return;
        };
        let pod = self
            .sandboxes
            .get(&record.sandbox_id)
            .map(|s| crate::sandbox::status::status_of(&s));
        let containers = self
            .containers
            .list()
            .into_iter()
            .filter(|c| c.sandbox_id == record.sandbox_id)
            .map(|c| status_of(&c))
            .collect();
        let _ = self.events.send(cri::ContainerEventResponse {
            container_id: id.to_string(),
            container_event_type: kind as i32,
            created_at: crate::util::now_nanos(),
            pod_sandbox_status: pod,
            containers_statuses: containers,
        });
    }

    /// Watch running containers for exits until the daemon stops.
    pub fn spawn_exit_watcher(self: &Arc<Self>) {
        let ctx = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(EXIT_POLL).await;
                let Some(ctx) = ctx.upgrade() else { return };
                for record in ctx.containers.list() {
                    ctx.refresh_container(record);
                }
            }
        });
    }
}
