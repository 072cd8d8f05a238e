# -*- coding: utf-8 -*-
# vim: ft=sls
{#- kubernetes.running: bring a master or a node up with the certificates
    pillar hands it.

      - kubernetes.certs.present    the certificates and keys;
      - kubernetes.kubelet.running  the kubelet's files and service (restarted
                                    when any of them changes);
      - kube-proxy's kubeconfig;
      - kubernetes.controlplane     on masters the static pods of the control
                                    plane and their kubeconfigs (on nodes: none).

    The role is pillar kubernetes:role (master or node, default node).

    On a host of a kubeadm-profile set (pillar kubernetes:kubeadm_pki, from the
    k8s_kubeadm ext_pillar) the same steps lay down kubeadm's layout instead:
    kubernetes.kubeadm.present in place of kubernetes.certs.present, the
    kubelet with /etc/kubernetes/kubelet.conf, and on masters the static pods
    of kube-apiserver, kube-controller-manager, kube-scheduler and etcd wired
    to /etc/kubernetes/pki.  kube-proxy then runs as kubeadm runs it, a
    DaemonSet with its service account: no kubeconfig on the host.  The role
    is the one the ext_pillar gives (kubernetes:kubeadm_pki:role). #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ '/map.jinja' import mapdata as kubernetes, node with context %}
{%- if node.errors %}
{{-  raise(node.errors | join('; ')) }}
{%- endif %}

include:
  - {{ tplroot }}.{{ node.layout.certs_sls }}
{%- for sls in node.layout.more_sls %}
  - {{ tplroot }}.{{ sls }}
{%- endfor %}
  - {{ tplroot }}.kubelet.running
  - {{ tplroot }}.controlplane
{%- if node.profile == 'seed' and node.layout.own_kubeconfigs %}

{#- A symlink planted at a destination would send the write wherever it points. #}
kubernetes-running-destinations-no-symlinks:
  k8s_certs.no_symlinks:
    - name: kube-proxy kubeconfig
    - paths: {{ [kubernetes.kube_proxy.kubeconfig] | json }}
    - require:
      - k8s_certs: kubernetes-certs-pillar-validated

kubernetes-running-kube-proxy-kubeconfig-file-managed:
  file.managed:
    - name: {{ kubernetes.kube_proxy.kubeconfig | json }}
    - source: salt://{{ tplroot }}/files/kubeconfig.yaml.jinja
    - template: jinja
    - context:
        cluster: {{ node.cluster_name | json }}
        server: {{ node.api_url | json }}
        server_name: {{ kubernetes.api_server.fqdn | json }}
        ca: {{ kubernetes.files['ca.crt'].path | json }}
        user: kube-proxy
        cert: {{ kubernetes.files['kubecfg.crt'].path | json }}
        key: {{ kubernetes.files['kubecfg.key'].path | json }}
    - user: {{ kubernetes.user | json }}
    - group: {{ kubernetes.group | json }}
    - mode: '{{ kubernetes.kubeconfig_mode }}'
    - makedirs: True
    - dir_mode: '{{ kubernetes.certs.dir_mode }}'
    - require:
      - k8s_certs: kubernetes-certs-pillar-validated
      - k8s_certs: kubernetes-running-destinations-no-symlinks
{%- endif %}
