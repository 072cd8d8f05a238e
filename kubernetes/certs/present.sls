# -*- coding: utf-8 -*-
# vim: ft=sls
{#- Lay down the certificates pillar `kubernetes:certs` hands this minion.

    First k8s_certs.validated checks the whole set (parse, key matches,
    signed by ca.crt, not expired); every other state requires it, so a bad
    pillar writes nothing.  k8s_certs.pem_managed (file.managed underneath)
    reads each PEM from pillar at apply time and never shows it, so no PEM
    text reaches the rendered SLS, the state output or the logs; it writes
    the text with lines stripped, which OpenSSL and Go need.  A minion without server.cert/server.key in pillar
    (a node) has none on disk either. #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ '/map.jinja' import mapdata as kubernetes with context %}
{%- set given = salt['pillar.get'](kubernetes.pillar, {}) %}
{%- set given = given if given is mapping else {} %}

kubernetes-certs-pillar-validated:
  k8s_certs.validated:
    - name: {{ kubernetes.pillar | json }}
    - service_account: {{ kubernetes.service_account.pillar | json }}

{#- A symlink planted at a destination would send a key wherever it points. #}
kubernetes-certs-destinations-no-symlinks:
  k8s_certs.no_symlinks:
    - name: certificates and keys
    - paths: {{ kubernetes.files.values() | map(attribute='path') | list | json }}
    - require:
      - k8s_certs: kubernetes-certs-pillar-validated

kubernetes-certs-dir-file-directory:
  file.directory:
    - name: {{ kubernetes.certs.dir | json }}
    - user: {{ kubernetes.user | json }}
    - group: {{ kubernetes.group | json }}
    - dir_mode: '{{ kubernetes.certs.dir_mode }}'
    - makedirs: True
    - require:
      - k8s_certs: kubernetes-certs-pillar-validated

{%- for id, file in kubernetes.files | dictsort %}
{%-   set state_id = 'kubernetes-certs-' ~ id | replace('.', '-') %}
{%-   if file.pillar in given or not file.masters_only %}

{{ state_id }}-pem-managed:
  k8s_certs.pem_managed:
    - name: {{ file.path | json }}
    - source: {{ (kubernetes.pillar ~ ':' ~ file.pillar) | json }}
    - user: {{ kubernetes.user | json }}
    - group: {{ kubernetes.group | json }}
    - mode: '{{ file.mode }}'
    - makedirs: True
    - dir_mode: '{{ kubernetes.certs.dir_mode }}'
    - require:
      - k8s_certs: kubernetes-certs-pillar-validated
      - k8s_certs: kubernetes-certs-destinations-no-symlinks
      - file: kubernetes-certs-dir-file-directory
{%-   else %}

{{ state_id }}-file-absent:
  file.absent:
    - name: {{ file.path | json }}
    - require:
      - k8s_certs: kubernetes-certs-pillar-validated
{%-   endif %}
{%- endfor %}

kubernetes-certs-trust-store-trusted:
  k8s_certs.trusted:
    - name: {{ kubernetes.trust.anchor | json }}
    - bundle: {{ kubernetes.trust.bundle | json }}
    - refresh: {{ kubernetes.trust.refresh | json }}
    - require:
      - k8s_certs: kubernetes-certs-trust-anchor-pem-managed

kubernetes-certs-trust-link-file-symlink:
  file.symlink:
    - name: {{ kubernetes.trust.link | json }}
    - target: {{ kubernetes.trust.anchor | json }}
    - user: {{ kubernetes.user | json }}
    - group: {{ kubernetes.group | json }}
    - require:
      - k8s_certs: kubernetes-certs-trust-store-trusted
