//! GetContainerEvents: lifecycle events for kubelet's evented PLEG; exits are pushed by
//! `watch`.

use super::ContainerService;
use super::status::status_of;
use k8s_cri::v1 as cri;
use k8s_cri::v1::ContainerEventType;

impl ContainerService {
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

    /// Watch every live container and Ready sandbox for its exit until the daemon stops (see
    /// `watch`).
    pub fn spawn_exit_watcher(&self) {
        self.watch_all_containers();
        self.watch_all_sandboxes();
    }
}
