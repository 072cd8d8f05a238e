# -*- coding: utf-8 -*-
# vim: ft=sls
{#- The kubelet of a master or a node, running with the certificates
    kubernetes.certs.present lays down: its kubeconfig (pointing at the
    apiserver, with the CA and the kubecfg pair from the certificates folder),
    its KubeletConfiguration (client CA, container runtime, and on masters the
    static pod folder), the service's environment and systemd drop-in, and the
    service itself, enabled, running and restarted whenever one of the files it
    reads changes.

    On a host of a kubeadm-profile set (pillar kubernetes:kubeadm_pki), the
    kubelet reads kubeadm's files instead: /etc/kubernetes/kubelet.conf (its
    own identity, system:node:<host>) and the client CA /etc/kubernetes/pki/ca.crt,
    both laid down by kubernetes.kubeadm.present, which owns them (this state
    writes no kubeconfig then).

    First of all (order: first, failhard) the prerequisites: the kubelet
    binary, its service and the container runtime's daemon must be installed;
    otherwise the run stops there, saying what is missing, before anything is
    written. #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ '/map.jinja' import mapdata as kubernetes, node with context %}
{%- if node.errors %}
{{-  raise(node.errors | join('; ')) }}
{%- endif %}
{%- set kubelet = kubernetes.kubelet %}
{%- set runtime = kubernetes.runtime[node.container_runtime] %}
{%- set layout = node.layout %}
{#- The seed layout: this state writes the kubelet's kubeconfig; kubeadm's:
    kubernetes.kubeadm.present does (kubelet.conf). #}
{%- set own_kubeconfig = layout.own_kubeconfigs %}
{%- set destinations = [kubelet.config, kubelet.env_file, kubelet.systemd_dropin] %}
{%- if own_kubeconfig %}
{%-   do destinations.insert(0, kubelet.kubeconfig) %}
{%- endif %}

include:
  - {{ tplroot }}.{{ layout.certs_sls }}
{%- for sls in layout.more_sls %}
  - {{ tplroot }}.{{ sls }}
{%- endfor %}

kubernetes-kubelet-prerequisites-met:
  k8s_node.prerequisites_met:
    - name: {{ kubelet.service | json }}
    - binary: {{ kubelet.binary | json }}
    - container_runtime: {{ node.container_runtime | json }}
    - daemon: {{ runtime.daemon | json }}
    - order: first
    - failhard: True

{#- A symlink planted at a destination would send the write wherever it points. #}
kubernetes-kubelet-destinations-no-symlinks:
  k8s_certs.no_symlinks:
    - name: kubelet files
    - paths: {{ destinations | json }}
    - require:
      - {{ layout.validated | json }}
{%- if own_kubeconfig %}

kubernetes-kubelet-kubeconfig-file-managed:
  file.managed:
    - name: {{ kubelet.kubeconfig | json }}
    - source: salt://{{ tplroot }}/files/kubeconfig.yaml.jinja
    - template: jinja
    - context:
        cluster: {{ node.cluster_name | json }}
        server: {{ node.api_url | json }}
        server_name: {{ kubernetes.api_server.fqdn | json }}
        ca: {{ kubernetes.files['ca.crt'].path | json }}
        user: kubelet
        cert: {{ kubernetes.files['kubecfg.crt'].path | json }}
        key: {{ kubernetes.files['kubecfg.key'].path | json }}
    - user: {{ kubernetes.user | json }}
    - group: {{ kubernetes.group | json }}
    - mode: '{{ kubernetes.kubeconfig_mode }}'
    - makedirs: True
    - dir_mode: '{{ kubernetes.certs.dir_mode }}'
    - require:
      - k8s_certs: kubernetes-certs-pillar-validated
      - k8s_certs: kubernetes-kubelet-destinations-no-symlinks
{%- endif %}

kubernetes-kubelet-config-file-managed:
  file.managed:
    - name: {{ kubelet.config | json }}
    - source: salt://{{ tplroot }}/files/kubelet-config.yaml.jinja
    - template: jinja
    - context:
        ca: {{ layout.kubelet_ca | json }}
        runtime_endpoint: {{ runtime.cri_endpoint | json }}
        static_pod_path: {{ (kubernetes.manifests.dir if node.master else '') | json }}
        cluster_dns: {{ kubernetes.cluster_dns | json }}
        cluster_domain: {{ kubernetes.cluster_domain | json }}
        cgroup_driver: {{ kubelet.cgroup_driver | json }}
        serving: {{ layout.kubelet_serving | json }}
        extra: {{ kubelet.config_extra | json }}
    - user: {{ kubernetes.user | json }}
    - group: {{ kubernetes.group | json }}
    - mode: '0644'
    - makedirs: True
    - dir_mode: '{{ kubernetes.certs.dir_mode }}'
    - require:
      - {{ layout.validated | json }}
      - k8s_certs: kubernetes-kubelet-destinations-no-symlinks

kubernetes-kubelet-env-file-managed:
  file.managed:
    - name: {{ kubelet.env_file | json }}
    - source: salt://{{ tplroot }}/files/kubelet.env.jinja
    - template: jinja
    - context:
        kubeconfig: {{ layout.kubelet_kubeconfig | json }}
        config: {{ kubelet.config | json }}
    - user: {{ kubernetes.user | json }}
    - group: {{ kubernetes.group | json }}
    - mode: '0644'
    - makedirs: True
    - require:
      - {{ layout.validated | json }}
      - k8s_certs: kubernetes-kubelet-destinations-no-symlinks

kubernetes-kubelet-systemd-dropin-file-managed:
  file.managed:
    - name: {{ kubelet.systemd_dropin | json }}
    - source: salt://{{ tplroot }}/files/kubelet-systemd.conf.jinja
    - template: jinja
    - context:
        env_file: {{ kubelet.env_file | json }}
        binary: {{ kubelet.binary | json }}
    - user: {{ kubernetes.user | json }}
    - group: {{ kubernetes.group | json }}
    - mode: '0644'
    - makedirs: True
    - require:
      - {{ layout.validated | json }}
      - k8s_certs: kubernetes-kubelet-destinations-no-symlinks

kubernetes-kubelet-service-running:
  service.running:
    - name: {{ kubelet.service | json }}
    - enable: True
    - watch:
{%- for watched in layout.kubelet_watch %}
      - {{ watched | json }}
{%- endfor %}
{%- if own_kubeconfig %}
      - file: kubernetes-kubelet-kubeconfig-file-managed
{%- endif %}
      - file: kubernetes-kubelet-config-file-managed
      - file: kubernetes-kubelet-env-file-managed
      - file: kubernetes-kubelet-systemd-dropin-file-managed
