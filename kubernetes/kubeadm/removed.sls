# -*- coding: utf-8 -*-
# vim: ft=sls
{#- Take away exactly the files kubernetes.kubeadm.present may lay down under
    /etc/kubernetes; folders and anything else there (manifests, other
    configuration) stay.  On a host that pillar hands the seed's certificates
    (kubernetes:certs), the paths the seed layout manages (by default
    /etc/kubernetes/admin.conf, the seed's admin kubeconfig) are not touched:
    they belong to kubernetes.running there. #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- from tplroot ~ '/map.jinja' import mapdata as kubernetes, node with context %}
{%- set kubeadm = kubernetes.kubeadm %}

{%- for rel in kubeadm.files if (kubeadm.dir ~ '/' ~ rel) not in node.seed_paths %}

kubernetes-kubeadm-removed-{{ rel | replace('/', '-') | replace('.', '-') }}-file-absent:
  file.absent:
    - name: {{ (kubeadm.dir ~ '/' ~ rel) | json }}
{%- endfor %}
