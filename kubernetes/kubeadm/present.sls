# -*- coding: utf-8 -*-
# vim: ft=sls
{#- Lay down this host's share of a kubeadm-profile set at kubeadm's paths
    (/etc/kubernetes/pki/..., /etc/kubernetes/*.conf), as pillar
    `kubernetes:kubeadm_pki:files` hands it (the k8s_kubeadm ext_pillar).

    k8s_kubeadm.validated checks the whole share first (parse, signed by the
    right CA, keys match, kubeconfigs hold pki/ca.crt, nothing expired); every
    file state requires it, so a bad pillar writes nothing.  Files are filled
    with contents_pillar and show_changes: False: no PEM text in the rendered
    SLS, the output or the logs.  A file of the profile that this host is not
    handed (a node: every key but its kubelet.conf's) is removed, unless the
    host enrolls it (docs/enrollment.md).

    One owner per path: on a host that pillar hands the seed's certificates
    (kubernetes:certs), the paths the seed layout manages (by default
    /etc/kubernetes/admin.conf) are left to kubernetes.running. #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ '/map.jinja' import mapdata as kubernetes, node with context %}
{%- set kubeadm = kubernetes.kubeadm %}
{%- set files_key = kubeadm.pillar ~ ':files' %}
{%- set given = salt['pillar.get'](files_key, {}) %}
{%- set given = given if given is mapping else {} %}
{#- What the host enrolls itself (the ext_pillar's `enrolled: true`):
    kubernetes.certs.enrolled lays it down; left alone here. #}
{%- set enrolled = salt['pillar.get'](kubeadm.pillar ~ ':enrolled', []) %}
{%- set enrolled = enrolled if enrolled is sequence and enrolled is not string else [] %}

kubernetes-kubeadm-pillar-validated:
  k8s_kubeadm.validated:
    - name: {{ files_key | json }}

{#- A symlink planted at a destination would send a key wherever it points. #}
{%- set destinations = [] %}
{%- for rel in kubeadm.files %}
{%-   do destinations.append(kubeadm.dir ~ '/' ~ rel) %}
{%- endfor %}

kubernetes-kubeadm-destinations-no-symlinks:
  k8s_certs.no_symlinks:
    - name: kubeadm files
    - paths: {{ destinations | json }}
    - require:
      - k8s_kubeadm: kubernetes-kubeadm-pillar-validated

kubernetes-kubeadm-dir-file-directory:
  file.directory:
    - name: {{ kubeadm.dir | json }}
    - user: {{ kubernetes.user | json }}
    - group: {{ kubernetes.group | json }}
    - dir_mode: '{{ kubeadm.dir_mode }}'
    - makedirs: True
    - require:
      - k8s_kubeadm: kubernetes-kubeadm-pillar-validated

{%- for rel in kubeadm.files if (kubeadm.dir ~ '/' ~ rel) not in node.seed_paths %}
{%-   set state_id = 'kubernetes-kubeadm-' ~ rel | replace('/', '-') | replace('.', '-') %}
{%-   set mode = kubernetes.key_mode if rel.endswith('.key') or rel.endswith('.conf') else kubernetes.cert_mode %}
{%-   if rel in given %}

{{ state_id }}-file-managed:
  file.managed:
    - name: {{ (kubeadm.dir ~ '/' ~ rel) | json }}
    - contents_pillar: {{ (files_key ~ ':' ~ rel) | json }}
    - user: {{ kubernetes.user | json }}
    - group: {{ kubernetes.group | json }}
    - mode: '{{ mode }}'
    - makedirs: True
    - dir_mode: '{{ kubeadm.dir_mode }}'
    - show_changes: False
    - require:
      - k8s_kubeadm: kubernetes-kubeadm-pillar-validated
      - k8s_certs: kubernetes-kubeadm-destinations-no-symlinks
      - file: kubernetes-kubeadm-dir-file-directory
{%-   elif rel not in enrolled %}

{{ state_id }}-file-absent:
  file.absent:
    - name: {{ (kubeadm.dir ~ '/' ~ rel) | json }}
    - require:
      - k8s_kubeadm: kubernetes-kubeadm-pillar-validated
{%-   endif %}
{%- endfor %}
