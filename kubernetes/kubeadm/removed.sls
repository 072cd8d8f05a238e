# -*- coding: utf-8 -*-
# vim: ft=sls
{#- Take away exactly the files kubernetes.kubeadm.present may lay down under
    /etc/kubernetes; folders and anything else there (manifests, other
    configuration) stay. #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ '/map.jinja' import mapdata as kubernetes with context %}
{%- set kubeadm = kubernetes.kubeadm %}

{%- for rel in kubeadm.files %}

kubernetes-kubeadm-removed-{{ rel | replace('/', '-') | replace('.', '-') }}-file-absent:
  file.absent:
    - name: {{ (kubeadm.dir ~ '/' ~ rel) | json }}
{%- endfor %}
