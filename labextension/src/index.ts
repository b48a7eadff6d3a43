// mlops-nb: the "MLOps" left sidebar (runs, this notebook's DAG and Run button, models and approvals,
// deployments and drift) and the step-cell badges.
import { ILabShell, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { INotebookTracker } from '@jupyterlab/notebook';
import { LabIcon } from '@jupyterlab/ui-components';

import { MlopsPanel } from './panel';

const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <circle cx="5" cy="5" r="3"/><circle cx="19" cy="12" r="3"/><circle cx="5" cy="19" r="3"/>
    <path d="M7.5 6.2l8.8 4.4-.9 1.8-8.8-4.4zM7.5 17.8l8.8-4.4-.9-1.8-8.8 4.4z"/>
  </g>
</svg>`;

export const mlopsIcon = new LabIcon({ name: 'mlops-nb:icon', svgstr: ICON_SVG });

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'mlops-nb:plugin',
  description: 'The MLOps sidebar of mlops_nb: runs, the DAG, models, approvals, deployments, drift.',
  autoStart: true,
  optional: [INotebookTracker, ILabShell],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker | null, labShell: ILabShell | null) => {
    const panel = new MlopsPanel(tracker);
    panel.title.icon = mlopsIcon;
    panel.title.caption = 'MLOps';
    app.shell.add(panel, 'left', { rank: 600 });
    app.commands.addCommand('mlops-nb:open', {
      label: 'Show the MLOps sidebar',
      execute: () => {
        if (labShell) {
          labShell.activateById(panel.id);
        }
      }
    });
    console.log('mlops-nb: the MLOps sidebar is loaded');
  }
};

export default plugin;
