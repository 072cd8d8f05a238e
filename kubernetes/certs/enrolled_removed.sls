# -*- coding: utf-8 -*-
# vim: ft=sls
{#- kubernetes.certs.enrolled_removed: take away what kubernetes.certs.enrolled
    may lay down, for every role (a host that was a master and became a node
    keeps nothing of its master's share): each member's certificate and key,
    the CA certificates and the kubelet's kubeconfig.  Folders stay.  The
    master keeps its copies of the certificates it signed
    (<set>/enrolled/<minion>/); to stop signing for this host, remove it from
    the set (docs/enrollment.md). #}
{%- set tplroot = tpldir.split('/')[0] %}
{%- import_yaml tplroot ~ '/parameters/enrollment.yaml' as enrollment %}
{%- set settings = salt['slsutil.merge'](enrollment['values'], salt['pillar.get']('kubernetes:enrollment', {}), strategy='recurse') %}
{%- set paths = [settings.kubeconfig] %}
{%- for member, files in enrollment.members | dictsort %}
{%-   do paths.extend([files.cert, files.key, files.ca]) %}
{%- endfor %}

{%- for path in paths | unique | sort %}

kubernetes-certs-enrolled-removed-{{ path | replace('/', '-') | replace('.', '-') | trim('-') }}-file-absent:
  file.absent:
    - name: {{ path | json }}
{%- endfor %}
