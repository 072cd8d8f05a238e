# -*- coding: utf-8 -*-
# vim: ft=sls
{#- Take away exactly what kubernetes.certs.present lays down: the files and
    the trust-store link (folders stay: other software may keep files there),
    then rebuild the system trust bundle so the cluster CA leaves it.  The
    refresh runs only when the anchor file was actually removed. #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ '/map.jinja' import mapdata as kubernetes with context %}

kubernetes-certs-removed-trust-link-file-absent:
  file.absent:
    - name: {{ kubernetes.trust.link | json }}

{%- for id, file in kubernetes.files | dictsort %}

kubernetes-certs-removed-{{ id | replace('.', '-') }}-file-absent:
  file.absent:
    - name: {{ file.path | json }}
{%- endfor %}

kubernetes-certs-removed-trust-store-cmd-run:
  cmd.run:
    - name: {{ kubernetes.trust.rebuild | json }}
    - onchanges:
      - file: kubernetes-certs-removed-trust-anchor-file-absent
    - require:
      - file: kubernetes-certs-removed-trust-link-file-absent
