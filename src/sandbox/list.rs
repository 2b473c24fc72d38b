//! ListPodSandbox with kubelet's filters: id (or unique prefix), state, label selector.

use super::SandboxService;
use super::status::cri_state;
use k8s_cri::v1 as cri;

impl SandboxService {
    pub fn list_pod_sandbox(&self, filter: Option<&cri::PodSandboxFilter>) -> Vec<cri::PodSandbox> {
        let mut records: Vec<_> = self
            .sandboxes
            .list()
            .into_iter()
            .map(|r| self.refreshed(r))
            .filter(|r| matches(r, filter))
            .collect();
        records.sort_by_key(|r| r.created_at);
        records
            .into_iter()
            .map(|r| cri::PodSandbox {
                id: r.id.clone(),
                metadata: r.config.metadata.clone(),
                state: cri_state(r.state) as i32,
                created_at: r.created_at,
                labels: r.config.labels.clone(),
                annotations: r.config.annotations.clone(),
                runtime_handler: r.runtime_handler.clone(),
            })
            .collect()
    }
}

fn matches(r: &crate::store::SandboxRecord, filter: Option<&cri::PodSandboxFilter>) -> bool {
    let Some(f) = filter else { return true };
    if !crate::util::id_matches(&f.id, &r.id) {
        return false;
    }
    if let Some(state) = &f.state
        && cri_state(r.state) as i32 != state.state
    {
        return false;
    }
    crate::util::labels_match(&f.label_selector, &r.config.labels)
}
