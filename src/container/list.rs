//! ListContainers with kubelet's filters: id (or prefix), state, pod sandbox id, labels.

use super::ContainerService;
use super::status::{cri_state, image_fields};
use crate::store::ContainerRecord;
use crate::util::{id_matches, labels_match};
use k8s_cri::v1 as cri;

impl ContainerService {
    pub fn list_containers(&self, filter: Option<&cri::ContainerFilter>) -> Vec<cri::Container> {
        let mut records: Vec<_> = self
            .containers
            .list()
            .into_iter()
            .map(|r| self.refresh_container(r))
            .filter(|r| matches(r, filter))
            .collect();
        records.sort_by_key(|r| r.created_at);
        records
            .iter()
            .map(|r| {
                let (image, image_ref) = image_fields(r);
                cri::Container {
                    id: r.id.clone(),
                    pod_sandbox_id: r.sandbox_id.clone(),
                    metadata: r.config.metadata.clone(),
                    image: Some(image),
                    image_ref,
                    state: cri_state(r.state) as i32,
                    created_at: r.created_at,
                    labels: r.config.labels.clone(),
                    annotations: r.config.annotations.clone(),
                    image_id: r.image_id.clone(),
                }
            })
            .collect()
    }
}

fn matches(r: &ContainerRecord, filter: Option<&cri::ContainerFilter>) -> bool {
    let Some(f) = filter else { return true };
    if !id_matches(&f.id, &r.id) || !id_matches(&f.pod_sandbox_id, &r.sandbox_id) {
        return false;
    }
    if let Some(state) = &f.state
        && cri_state(r.state) as i32 != state.state
    {
        return false;
    }
    labels_match(&f.label_selector, &r.config.labels)
}
