# -*- coding: utf-8 -*-
# vim: ft=sls
{#- kubernetes.kubelet.removed: stop the kubelet, then remove every container
    the configured runtime runs on this host (pillar kubernetes:container_runtime:
    docker, or containerd through crictl or ctr), so that system pods come back
    with fresh secrets when kubernetes.running starts the kubelet again.

    CAUTION: this takes down every container on the host (with containerd:
    every container in the Kubernetes namespace), not only Kubernetes' own.

    Images and volumes stay unless kubernetes:lookup:cleanup:images / volumes
    say otherwise.  A host without the runtime's command-line tool has no
    containers to remove: the state says so and succeeds.  So does a host whose
    runtime daemon is not running (its socket does not exist): the comment
    says that nothing was removed. #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ '/map.jinja' import mapdata as kubernetes, node with context %}
{%- if node.runtime_errors %}
{{-  raise(node.runtime_errors | join('; ')) }}
{%- endif %}
{%- set runtime = node.container_runtime %}
{%- set cli = kubernetes.runtime[runtime] %}

kubernetes-kubelet-removed-service-dead:
  service.dead:
    - name: {{ kubernetes.kubelet.service | json }}

kubernetes-kubelet-removed-containers-absent:
  k8s_node.containers_absent:
    - name: {{ runtime | json }}
    - cli: {{ cli.cli | json }}
{%- if runtime == 'docker' %}
    - host: {{ cli.host | json }}
{%- else %}
    - address: {{ cli.address | json }}
    - namespace: {{ cli.namespace | json }}
{%- endif %}
    - images: {{ kubernetes.cleanup.images | to_bool }}
    - volumes: {{ kubernetes.cleanup.volumes | to_bool }}
    - require:
      - service: kubernetes-kubelet-removed-service-dead
